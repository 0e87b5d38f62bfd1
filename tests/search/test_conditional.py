"""Conditional create, update, patch and delete, `find_matches`, and the race: 50 parallel
conditional creates with the same criteria make exactly one resource (in one process, and
across two server processes sharing one SQLite file)."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from bench.server import ServerProcess
from fhirpm.errors import FhirError
from fhirpm.repository import conditional
from tests.conftest import FHIR_JSON
from tests.search.helpers import ids, search

MRN = "http://acme.org/mrn"


def patient(mrn: str, family: str = "Doe") -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": family}]}


def if_none_exist(mrn: str) -> dict[str, str]:
    return {**FHIR_JSON, "If-None-Exist": f"identifier={MRN}|{mrn}"}


async def test_conditional_create_none_one_many(client: httpx.AsyncClient) -> None:
    r = await client.post("Patient", json=patient("1"), headers=if_none_exist("1"))
    assert r.status_code == 201
    first = r.json()["id"]
    again = await client.post("Patient", json=patient("1", "Other"), headers=if_none_exist("1"))
    assert again.status_code == 200 and again.json()["id"] == first
    assert again.json()["name"][0]["family"] == "Doe"  # nothing was written
    await client.post("Patient", json=patient("2"), headers=FHIR_JSON)
    await client.post("Patient", json=patient("2"), headers=FHIR_JSON)
    many = await client.post("Patient", json=patient("2"), headers=if_none_exist("2"))
    assert many.status_code == 412
    bad = await client.post("Patient", json=patient("3"),
                            headers={**FHIR_JSON, "If-None-Exist": "nonsense=1"})
    assert bad.status_code == 400  # an unknown criterion never widens the match
    empty = await client.post("Patient", json=patient("3"),
                              headers={**FHIR_JSON, "If-None-Exist": "_count=1"})
    assert empty.status_code == 400


async def test_fifty_parallel_conditional_creates_make_one(client: httpx.AsyncClient) -> None:
    async def create(n: int) -> int:
        r = await client.post("Patient", json=patient("race", f"Racer{n}"),
                              headers=if_none_exist("race"))
        return r.status_code

    statuses = Counter(await asyncio.gather(*(create(n) for n in range(50))))
    assert statuses == Counter({201: 1, 200: 49})
    found = await search(client, "Patient", {"identifier": f"{MRN}|race"})
    assert found["total"] == 1


def test_fifty_parallel_creates_across_two_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    servers = [ServerProcess.fhirpm(url, tmp_path / f"{n}.log") for n in range(2)]
    with ThreadPoolExecutor(2) as pool:  # start both at once: each takes seconds to import
        list(pool.map(ServerProcess.start, servers))
    with servers[0] as a, servers[1] as b:
        bases = [f"{a.base_url}/fhir", f"{b.base_url}/fhir"]

        async def race() -> Counter[int]:
            async with httpx.AsyncClient(timeout=60) as http:
                async def create(n: int) -> int:
                    r = await http.post(f"{bases[n % 2]}/Patient", json=patient("x", f"R{n}"),
                                        headers=if_none_exist("x"))
                    return r.status_code
                statuses = Counter(await asyncio.gather(*(create(n) for n in range(50))))
                found = (await http.get(f"{bases[0]}/Patient",
                                        params={"identifier": f"{MRN}|x"})).json()
                assert found["total"] == 1
                return statuses

        assert asyncio.run(race()) == Counter({201: 1, 200: 49})


async def test_conditional_update(client: httpx.AsyncClient) -> None:
    created = await client.put(f"Patient?identifier={MRN}|u1", json=patient("u1"),
                               headers=FHIR_JSON)
    assert created.status_code == 201  # no match, no id: create
    pid = created.json()["id"]
    updated = await client.put(f"Patient?identifier={MRN}|u1", json=patient("u1", "New"),
                               headers=FHIR_JSON)
    assert updated.status_code == 200 and updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    wrong_id = await client.put(f"Patient?identifier={MRN}|u1",
                                json={**patient("u1"), "id": "other"}, headers=FHIR_JSON)
    assert wrong_id.status_code == 400
    with_id = await client.put(f"Patient?identifier={MRN}|u2",
                               json={**patient("u2"), "id": "client-id"}, headers=FHIR_JSON)
    assert with_id.status_code == 201 and with_id.json()["id"] == "client-id"
    taken = await client.put(f"Patient?identifier={MRN}|u3",
                             json={**patient("u3"), "id": "client-id"}, headers=FHIR_JSON)
    assert taken.status_code == 409  # exists, but does not match the criteria
    await client.post("Patient", json=patient("u1"), headers=FHIR_JSON)
    many = await client.put(f"Patient?identifier={MRN}|u1", json=patient("u1"),
                            headers=FHIR_JSON)
    assert many.status_code == 412


async def test_conditional_patch(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=patient("pa"), headers=FHIR_JSON)).json()["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Patched"}]
    r = await client.patch(f"Patient?identifier={MRN}|pa", json=ops,
                           headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == pid and r.json()["name"][0]["family"] == "Patched"
    missing = await client.patch(f"Patient?identifier={MRN}|nobody", json=ops,
                                 headers={"Content-Type": "application/json-patch+json"})
    assert missing.status_code == 404


async def test_conditional_delete_single(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=patient("d1"), headers=FHIR_JSON)).json()["id"]
    assert (await client.delete(f"Patient?identifier={MRN}|d1")).status_code == 204
    assert (await client.get(f"Patient/{pid}")).status_code == 410
    assert (await client.delete(f"Patient?identifier={MRN}|d1")).status_code == 204
    for _ in range(2):
        await client.post("Patient", json=patient("d2"), headers=FHIR_JSON)
    assert (await client.delete(f"Patient?identifier={MRN}|d2")).status_code == 412
    assert (await search(client, "Patient", {"identifier": f"{MRN}|d2"}))["total"] == 2


async def test_conditional_delete_multiple(client: httpx.AsyncClient, app: FastAPI) -> None:
    app.state.interactions.features["conditionalDelete"] = "multiple"
    for _ in range(3):
        await client.post("Patient", json=patient("m"), headers=FHIR_JSON)
    assert (await client.delete(f"Patient?identifier={MRN}|m")).status_code == 204
    assert (await search(client, "Patient", {"identifier": f"{MRN}|m"}))["total"] == 0


async def test_find_matches_inside_a_unit_sees_its_writes(app: FastAPI) -> None:
    ix = app.state.interactions
    async with ix.repo.store.unit_of_work() as uow:
        assert await conditional.find_matches(ix, "Patient", f"identifier={MRN}|t", uow) == []
        await ix.repo.create("Patient", patient("t"), uow=uow)
        found = await conditional.find_matches(ix, "Patient", f"identifier={MRN}|t", uow)
        assert [v.type for v in found] == ["Patient"]
    assert len(await conditional.find_matches(ix, "Patient", f"?identifier={MRN}|t", None)) == 1
    with pytest.raises(FhirError) as err:
        await conditional.find_matches(ix, "Patient", "bogus=1", None)
    assert err.value.status == 400


async def test_conditional_references_in_a_transaction(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=patient("tx"), headers=FHIR_JSON)).json()["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "request": {"method": "POST", "url": "Observation"},
        "resource": {"resourceType": "Observation", "status": "final",
                     "code": {"text": "weight"},
                     "subject": {"reference": f"Patient?identifier={MRN}|tx"}}}]}
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert ids(await search(client, "Observation", {"subject": f"Patient/{pid}"}))
