"""Durability: SIGKILL the server in the middle of an ingest, restart it on the same file.

Clients keep posting small transaction bundles (a Patient and nine Observations that refer
to it by urn:uuid, all ten tagged with the bundle's number: ten writes per unit of work
widen the window in which the kill lands inside one). Once enough bundles have been
acknowledged the server gets SIGKILL while requests are still in flight. After a restart on
the same SQLite file:
  - every acknowledged (HTTP 2xx) bundle is there, whole: each resource readable, byte-exact
    decimals, references rewritten to the stored ids;
  - every bundle is all-or-nothing: a tag has all ten resources or none, and nothing is
    there that no client sent;
  - the database passes SQLite's integrity check and takes new writes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path

import httpx

from bench.server import ServerProcess

TAG_SYSTEM = "urn:fhirpm:test:bundle"
WORKERS = 4
OBSERVATIONS = 9
KILL_AFTER = 20  # acknowledged bundles before the kill
MAX_BUNDLES = 5000  # bound on the ingest if the kill never comes
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def transaction(tag: str) -> bytes:
    patient_url = f"urn:uuid:{tag_uuid(tag)}"
    ident = [{"system": TAG_SYSTEM, "value": tag}]

    def observation(code: str) -> dict:
        return {"resourceType": "Observation", "identifier": ident, "status": "final",
                "code": {"text": code}, "subject": {"reference": patient_url},
                "valueQuantity": {"value": "__DECIMAL__", "unit": "kg"}}

    entries = [
        {"fullUrl": patient_url, "resource": {"resourceType": "Patient", "identifier": ident},
         "request": {"method": "POST", "url": "Patient"}},
        *({"resource": observation(code), "request": {"method": "POST", "url": "Observation"}}
          for code in (f"code-{n}" for n in range(OBSERVATIONS))),
    ]
    body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return body.replace('"__DECIMAL__"', "72.50").encode()  # a decimal json can't write


def tag_uuid(tag: str) -> str:
    return f"00000000-0000-4000-8000-{int(tag[1:]):012d}"


class Ingest:
    """Workers posting bundles until told to stop or the server dies under them."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.acked: dict[str, list[str]] = {}  # tag -> locations of its resources
        self.attempted: set[str] = set()
        self.transport_failures = 0
        self.unexpected: list[str] = []
        self.enough = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30,
                                     headers=FHIR_JSON) as client:
            await asyncio.gather(*(self._worker(client, w) for w in range(WORKERS)))

    async def _worker(self, client: httpx.AsyncClient, first: int) -> None:
        for n in range(first, MAX_BUNDLES, WORKERS):
            tag = f"b{n}"
            self.attempted.add(tag)
            try:
                r = await client.post("", content=transaction(tag))
            except httpx.TransportError:
                self.transport_failures += 1
                return
            if r.status_code != 200:
                self.unexpected.append(f"{tag}: {r.status_code} {r.text[:300]}")
                return
            self.acked[tag] = [e["response"]["location"] for e in r.json()["entry"]]
            if len(self.acked) >= KILL_AFTER:
                self.enough.set()
        self.enough.set()


async def test_kill_9_mid_ingest_keeps_every_acknowledged_bundle_whole(
        store_url: str, tmp_path: Path) -> None:
    server = ServerProcess.fhirpm(store_url, tmp_path / "first.log").start()
    ingest = Ingest(server.base_url + "/fhir")
    clients = asyncio.create_task(ingest.run())
    try:
        await asyncio.wait_for(ingest.enough.wait(), timeout=120)
    finally:
        server.kill()
    await asyncio.wait_for(clients, timeout=60)
    assert not ingest.unexpected, ingest.unexpected
    assert len(ingest.acked) >= KILL_AFTER
    assert ingest.transport_failures == WORKERS, "the kill must hit every busy worker"

    db_path = store_url.removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as db:  # opening runs WAL recovery, as a restart would
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()

    with ServerProcess.fhirpm(store_url, tmp_path / "second.log") as restarted:
        base = restarted.base_url + "/fhir"
        async with httpx.AsyncClient(timeout=30, headers=FHIR_JSON) as client:
            await check_acknowledged_are_whole(client, ingest.acked, base, server.base_url)
            tags = await tags_in_history(client, base)
            assert set(tags.values()) == {OBSERVATIONS + 1}, f"half-written bundles: {tags}"
            assert set(ingest.acked) <= set(tags) <= ingest.attempted
            # the store takes new writes after recovery
            after = await client.post(base, content=transaction(f"b{MAX_BUNDLES}"))
            assert after.status_code == 200, after.text


async def check_acknowledged_are_whole(client: httpx.AsyncClient, acked: dict[str, list[str]],
                                       base: str, old_origin: str) -> None:
    for tag, locations in acked.items():
        bodies = []
        for location in locations:
            url = base + location.removeprefix(old_origin + "/fhir")
            r = await client.get(url)
            assert r.status_code == 200, f"acknowledged {location} lost: {r.status_code}"
            bodies.append(r.content)
        patient, *observations = (json.loads(b) for b in bodies)
        assert patient["resourceType"] == "Patient"
        for doc, raw in zip(observations, bodies[1:], strict=True):
            assert doc["identifier"][0]["value"] == tag
            assert doc["subject"]["reference"] == f"Patient/{patient['id']}"
            assert b'"value":72.50' in raw


async def tags_in_history(client: httpx.AsyncClient, base: str) -> Counter[str]:
    """How many stored resources carry each bundle tag, over the whole system history."""
    tags: Counter[str] = Counter()
    url: str | None = f"{base}/_history?_count=500"
    while url:
        page = (await client.get(url)).json()
        for entry in page.get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] == "AuditEvent":
                continue  # the audit trail's own records
            assert resource["meta"]["versionId"] == "1"
            tags[resource["identifier"][0]["value"]] += 1
        url = next((link["url"] for link in page.get("link", [])
                    if link["relation"] == "next"), None)
    return tags
