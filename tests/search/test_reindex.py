"""Custom SearchParameters: creating one starts a reindex job; the parameter is refused
until the job is done, then finds resources written before and after it. `$reindex` and
`$reindex-status`; jobs are claimed with compare-and-swap leases, so an expired lease is
resumed and a live one is left to its owner."""

from __future__ import annotations

import time

import httpx
import orjson
from fastapi import FastAPI

from fhirpm.repository import reindex
from tests.conftest import BASE, FHIR_JSON
from tests.search.helpers import ids, outcome, put_all, search

COLOR = "http://acme.org/favorite-color"
PARAM = {"resourceType": "SearchParameter", "id": "favorite-color",
         "url": "http://acme.org/SearchParameter/favorite-color", "name": "FavoriteColor",
         "status": "active", "description": "The patient's favourite colour",
         "code": "favorite-color", "base": ["Patient"], "type": "string",
         "expression": f"Patient.extension.where(url = '{COLOR}').value"}


def colored(id_: str, color: str) -> dict:
    return {"resourceType": "Patient", "id": id_,
            "extension": [{"url": COLOR, "valueString": color}]}


async def test_a_new_search_parameter_is_searchable_once_reindexed(
        client: httpx.AsyncClient, app: FastAPI) -> None:
    ix = app.state.interactions
    await put_all(client, [colored(f"old{n}", "Blue" if n % 2 else "red") for n in range(5)])
    async with reindex.held(ix):  # the job cannot finish before we look
        await put_all(client, [PARAM])
        early = await search(client, "Patient", {"favorite-color": "blue"})
        assert any("being reindexed" in p for p in outcome(early))  # pending: refused
        assert (await client.get("Patient", params={"favorite-color": "blue"},
                                 headers={"Prefer": "handling=strict"})).status_code == 400
        await put_all(client, [colored("new1", "blue")])  # indexed at write time meanwhile
    await reindex.drain(ix)
    found = await search(client, "Patient", {"favorite-color": "blue"},
                         headers={"Prefer": "handling=strict"})
    assert sorted(ids(found)) == ["new1", "old1", "old3"]
    status = await search(client, "$reindex-status",
                          {"job": "http://acme.org/SearchParameter/favorite-color"})
    values = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
              for p in status["parameter"]}
    assert values["status"] == "done" and values["done"] == values["total"] >= 5

    assert (await client.delete("SearchParameter/favorite-color")).status_code == 204
    gone = await search(client, "Patient", {"favorite-color": "blue"})
    assert any("unknown search parameter" in p for p in outcome(gone))


async def test_reindex_operation_reports_progress(client: httpx.AsyncClient,
                                                  app: FastAPI) -> None:
    await put_all(client, [colored(f"p{n}", "green") for n in range(3)])
    r = await client.post("Patient/$reindex", headers=FHIR_JSON)
    assert r.status_code == 202, r.text
    location = r.headers["content-location"]
    assert location.startswith(f"{BASE}/$reindex-status?job=")
    await reindex.drain(app.state.interactions)
    status = (await client.get(location[len(BASE) + 1:])).json()
    values = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
              for p in status["parameter"]}
    assert values == {"job": values["job"], "status": "done", "done": 3, "total": 3}
    assert (await client.get("$reindex-status", params={"job": "nope"})).status_code == 404
    assert (await client.get("Patient/$reindex")).status_code == 405


async def test_leases_decide_who_works_on_a_job(client: httpx.AsyncClient,
                                                app: FastAPI) -> None:
    ix = app.state.interactions
    store = ix.repo.store
    await put_all(client, [colored("x1", "blue")])

    def job(owner: str, lease_until: float) -> bytes:
        return orjson.dumps({"url": None, "types": ["Patient"], "for": 0, "status": "running",
                             "type_index": 0, "cursor": None, "done": 0, "total": None,
                             "owner": owner, "lease_until": lease_until, "started": 0,
                             "finished": None})

    await store.doc_put(reindex.COLLECTION, "all:crashed", job("gone-process", 0))
    await store.doc_put(reindex.COLLECTION, "all:busy", job("live-process", time.time() + 600))
    await reindex.start(ix, ["Practitioner"])  # wakes this process's worker
    await reindex.drain(ix)
    crashed = await reindex.status(ix, "all:crashed")
    busy = await reindex.status(ix, "all:busy")
    assert crashed["status"] == "done" and crashed["done"] == 1  # resumed after its lease
    assert busy["status"] == "running" and busy["owner"] == "live-process"  # left alone


async def test_capability_statement_lists_a_parameter_once_searchable(
        client: httpx.AsyncClient, app: FastAPI) -> None:
    async def patient_params() -> set[str]:
        statement = (await client.get("metadata")).json()
        patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
        return {p["name"] for p in patient["searchParam"]}

    await put_all(client, [PARAM])
    pending = await patient_params()
    assert "favorite-color" not in pending and "birthdate" in pending
    await reindex.drain(app.state.interactions)
    assert "favorite-color" in await patient_params()


async def test_drain_returns_when_the_worker_fails(client: httpx.AsyncClient,
                                                   app: FastAPI) -> None:
    """A worker that fails on every batch (here: an indexer that raises) stops; drain must
    not respawn it forever. The job stays unfinished for its lease to retry later."""
    import asyncio

    class BrokenIndexer:
        def extract(self, type: str, resource: dict) -> list:
            raise RuntimeError("index extraction failed")

    ix = app.state.interactions
    await put_all(client, [colored("b1", "blue")])
    ix.repo.indexer = BrokenIndexer()  # only the reindex worker extracts from here on
    key = await reindex.start(ix, ["Patient"])
    await asyncio.wait_for(reindex.drain(ix), timeout=30)  # a guard: it hung before the fix
    assert (await reindex.status(ix, key))["status"] != "done"
