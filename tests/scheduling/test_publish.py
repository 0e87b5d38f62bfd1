"""SMART Scheduling Links over HTTP: the `$bulk-publish` manifest and its NDJSON files are
served without a token (everything else still needs one), publish free/busy Slots of
published Schedules and nothing private, and refresh incrementally with `_since`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from fhirpm.config import SchedulingSettings, Settings
from fhirpm.scheduling import model, publish
from tests.conftest import BASE, FHIR_JSON

BOOK = "https://portal.example.org/book?slot={slot}"


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Publishing on (lag 0: a test's writes are committed before it asks), except in
    tests named `*disabled*`."""
    on = "disabled" not in request.node.name
    return settings.model_copy(update={"scheduling": SchedulingSettings(
        publish_enabled=on, publish_lag_seconds=0, publish_max_age=120,
        publish_booking_url=BOOK, publish_booking_phone="+1 555 0100")})


@pytest.fixture
async def public(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A booking site: no Authorization header at all."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE + "/") as c:
        yield c


async def _post(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(resource["resourceType"], json=resource, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()


def _slot(schedule: str, start: str, status: str = "free", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule}"},
            "status": status, "start": f"{start}:00Z", "end": f"{start[:-2]}30:00Z",
            **extra}


async def _practice(client: httpx.AsyncClient) -> dict[str, Any]:
    """A published schedule with slots, and schedules that must stay private."""
    clinic = await _post(client, {
        "resourceType": "Location", "name": "Main St Clinic", "status": "active",
        "address": {"city": "Springfield", "state": "MA"},
        "identifier": [{"system": "urn:internal", "value": "loc-7"}],
        "managingOrganization": {"display": "internal"}})
    other = await _post(client, {"resourceType": "Location", "name": "Back office"})
    doctor = await _post(client, {"resourceType": "Practitioner", "name": [{"family": "Ode"}]})
    patient = await _post(client, {"resourceType": "Patient", "name": [{"family": "Secret"}]})
    sched = await _post(client, {
        "resourceType": "Schedule", "active": True, "comment": "internal note",
        "serviceType": [{"coding": [model.IN_PERSON]}],
        "actor": [{"reference": f"Practitioner/{doctor['id']}", "display": "Dr Ode"},
                  {"reference": f"Location/{clinic['id']}"}]})
    mine = await _post(client, {"resourceType": "Schedule",
                                "actor": [{"reference": f"Patient/{patient['id']}"}]})
    closed = await _post(client, {"resourceType": "Schedule", "active": False,
                                  "actor": [{"reference": f"Location/{other['id']}"}]})
    slots = {
        "free": await _post(client, _slot(sched["id"], "2030-05-06T09:00", comment="x")),
        "busy": await _post(client, _slot(sched["id"], "2030-05-06T10:00", "busy-tentative")),
        "past": await _post(client, _slot(sched["id"], "2020-05-06T09:00")),
        "private": await _post(client, _slot(mine["id"], "2030-05-06T09:00")),
        "closed": await _post(client, _slot(closed["id"], "2030-05-06T09:00")),
    }
    return {"clinic": clinic, "schedule": sched, "private": mine, "closed": closed,
            "slots": slots}


async def _file(public: httpx.AsyncClient, url: str,
                **headers: str) -> list[dict[str, Any]]:
    r = await public.get(url.removeprefix(BASE + "/"), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in r.content.splitlines()]


async def _manifest(public: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    r = await public.get("$bulk-publish", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "public, max-age=120"
    return r.json()


async def _files(public: httpx.AsyncClient,
                 manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        out.setdefault(item["type"], []).extend(await _file(public, item["url"]))
    return out


async def test_manifest_and_files_without_a_token(client: httpx.AsyncClient,
                                                  public: httpx.AsyncClient) -> None:
    practice = await _practice(client)
    manifest = await _manifest(public)
    assert manifest["request"] == f"{BASE}/$bulk-publish"
    assert manifest["transactionTime"].endswith("Z") and manifest["error"] == []
    sched_id = practice["schedule"]["id"]
    assert [o["type"] for o in manifest["output"]] == ["Location", "Schedule", "Slot"]
    assert manifest["output"][2] == {  # with the spec's hint: where its Locations are
        "type": "Slot", "url": f"{BASE}/$bulk-publish?file=Slot&schedule={sched_id}",
        "extension": {"state": ["MA"]}}

    files = await _files(public, manifest)
    assert files["Location"] == [{"resourceType": "Location", "id": practice["clinic"]["id"],
                                  "status": "active", "name": "Main St Clinic",
                                  "address": {"city": "Springfield", "state": "MA"}}]
    [schedule] = files["Schedule"]
    assert schedule["id"] == sched_id and schedule["active"] is True
    assert "comment" not in schedule and schedule["actor"][0]["display"] == "Dr Ode"
    slots = {s["id"]: s for s in files["Slot"]}
    free, busy = practice["slots"]["free"]["id"], practice["slots"]["busy"]["id"]
    assert list(slots) == [free, busy]  # by start; not the past, private or closed ones
    assert slots[free]["status"] == "free" and slots[busy]["status"] == "busy"
    assert slots[free] == {
        "resourceType": "Slot", "id": free, "schedule": {"reference": f"Schedule/{sched_id}"},
        "status": "free", "start": "2030-05-06T09:00:00Z", "end": "2030-05-06T09:30:00Z",
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/"
                              "booking-deep-link",
                       "valueUrl": BOOK.replace("{slot}", free)},
                      {"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/"
                              "booking-phone", "valueString": "+1 555 0100"}]}


async def test_everything_else_still_needs_a_token(client: httpx.AsyncClient,
                                                   public: httpx.AsyncClient) -> None:
    practice = await _practice(client)
    slot = practice["slots"]["free"]["id"]
    assert (await public.get(f"Slot/{slot}")).status_code == 401
    assert (await public.get("Slot")).status_code == 401
    assert (await public.get("Patient")).status_code == 401
    assert (await public.post("$bulk-publish", json={"resourceType": "Parameters"},
                              headers=FHIR_JSON)).status_code == 401
    assert (await public.get(f"Schedule/{practice['schedule']['id']}/$bulk-publish")
            ).status_code == 401
    # a public GET ignores a token, even a bad one (what it answers is the same for all)
    r = await public.get("$bulk-publish", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 200 and r.json()["output"]
    assert (await public.get("Slot", headers={"Authorization": "Bearer not-a-token"})
            ).status_code == 401
    # a private schedule's slot file is not served, even when asked for by id
    r = await public.get("$bulk-publish", params={"file": "Slot",
                                                   "schedule": practice["private"]["id"]})
    assert r.status_code == 404


async def test_accept_headers_and_conditional_get(client: httpx.AsyncClient,
                                                  public: httpx.AsyncClient) -> None:
    practice = await _practice(client)
    url = f"$bulk-publish?file=Slot&schedule={practice['schedule']['id']}"
    bodies = set()
    for accept in (None, "application/fhir+ndjson", "application/ndjson", "*/*"):
        r = await public.get(url, headers={"Accept": accept} if accept else {})
        assert r.status_code == 200 and r.headers["content-type"].startswith(
            "application/fhir+ndjson"), (accept, r.text)
        bodies.add(r.content)
    assert len(bodies) == 1
    for accept in (None, "application/json"):
        r = await public.get("$bulk-publish", headers={"Accept": accept} if accept else {})
        assert r.status_code == 200 and "output" in r.json()
    etag = r.headers["etag"]
    r = await public.get(url)
    assert (await public.get(url, headers={"If-None-Match": r.headers["etag"]})
            ).status_code == 304
    assert etag != r.headers["etag"]


async def test_bad_requests(public: httpx.AsyncClient) -> None:
    for params in ({"_since": "yesterday"}, {"_since": "2030-01-01T00:00:00"},
                   {"file": "Patient"}, {"file": "Slot"},
                   {"file": "Slot", "schedule": "nope"},
                   {"file": "Schedule", "_pretty": "true"}):
        r = await public.get("$bulk-publish", params=params)
        assert r.status_code in (400, 404), params
        assert r.json()["resourceType"] == "OperationOutcome"


async def test_incremental_since(client: httpx.AsyncClient, public: httpx.AsyncClient,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "HISTORY_PAGE", 2)  # the history walk goes over pages
    practice = await _practice(client)
    sched_id = practice["schedule"]["id"]
    first = await _manifest(public)
    since = first["transactionTime"]
    # nothing changed: the incremental files are empty
    assert await _files(public, await _manifest(public, _since=since)) == {
        "Location": [], "Schedule": [], "Slot": []}

    slots = practice["slots"]
    taken = {**slots["free"], "status": "busy"}
    assert (await client.put(f"Slot/{taken['id']}", json=taken,
                             headers=FHIR_JSON)).status_code == 200
    assert (await client.delete(f"Slot/{slots['busy']['id']}")).status_code in (200, 204)
    new = await _post(client, _slot(sched_id, "2030-05-07T09:00"))
    await _post(client, _slot(practice["private"]["id"], "2030-05-07T09:00"))

    manifest = await _manifest(public, _since=since)
    assert manifest["request"].startswith(f"{BASE}/$bulk-publish?_since=")
    assert [o["type"] for o in manifest["output"]] == ["Location", "Schedule", "Slot"]
    assert all("_since=" in o["url"] for o in manifest["output"])
    files = await _files(public, manifest)
    assert files["Location"] == [] and files["Schedule"] == []
    changed = {s["id"]: s["status"] for s in files["Slot"]}
    assert changed == {taken["id"]: "busy", slots["busy"]["id"]: "busy", new["id"]: "free"}

    # a schedule withdrawn since: published as inactive, its actors no longer listed
    later = manifest["transactionTime"]
    closed = {**practice["schedule"], "active": False}
    assert (await client.put(f"Schedule/{sched_id}", json=closed,
                             headers=FHIR_JSON)).status_code == 200
    files = await _files(public, await _manifest(public, _since=later))
    assert files["Schedule"] == [{"resourceType": "Schedule", "id": sched_id, "active": False,
                                  "serviceType": practice["schedule"]["serviceType"]}]
    # and the full manifest no longer offers it
    assert [o["type"] for o in (await _manifest(public))["output"]] == ["Location", "Schedule"]


async def test_publishing_disabled_stays_closed(client: httpx.AsyncClient,
                                                public: httpx.AsyncClient) -> None:
    assert (await public.get("$bulk-publish")).status_code == 401
    r = await client.get("$bulk-publish")  # staff: the operation is simply not offered
    assert r.status_code == 400
