"""Query-constrained v2 scopes filter as if their query were ANDed into every search
(several scopes: OR of their queries) and refuse reads outside them (404); user/ scopes
of a patient user stay inside that patient's compartment."""

from __future__ import annotations

from typing import Any

import httpx

from tests.access.conftest import LAB, VITAL, World, ids, observation

JSON = {"Content-Type": "application/fhir+json"}
LAB_ONLY = "patient/Observation.rs?category=laboratory"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


async def search(client: httpx.AsyncClient, path: str, params: Any = None) -> dict[str, Any]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_query_scope_filters_searches_and_reads(world: World) -> None:
    lab = await world.patient("A", LAB_ONLY)
    found = await search(lab, "Observation", {"_total": "accurate"})
    assert ids(found) == {"Observation/a-lab"} and found["total"] == 1
    assert (await lab.get("Observation/a-lab")).status_code == 200
    assert (await lab.get("Observation/a-vital")).status_code == 404
    assert (await lab.get("Observation/b-lab")).status_code == 404
    vitals = await search(lab, "Observation", {"category": "vital-signs"})
    assert ids(vitals) == set()
    assert (await lab.get("Patient/A")).status_code == 403  # no Patient scope at all


async def test_alternative_scopes_are_ored(world: World) -> None:
    both = await world.patient("A", f"{LAB_ONLY} patient/Observation.rs?category="
                                    f"{CATEGORY}|vital-signs")
    assert ids(await search(both, "Observation")) == {"Observation/a-lab",
                                                      "Observation/a-vital"}
    plus_all = await world.patient("A", f"{LAB_ONLY} patient/Observation.rs")
    assert ids(await search(plus_all, "Observation")) == {"Observation/a-lab",
                                                          "Observation/a-vital"}


async def test_a_query_scope_limits_writes(world: World) -> None:
    lab = await world.patient("A", "patient/Observation.cruds?category=laboratory")
    body = {k: v for k, v in observation("x", "A", VITAL).items() if k != "id"}
    r = await lab.post("Observation", json=body, headers=JSON)
    assert r.status_code == 403
    ok = await lab.post("Observation", json={**body, "category": [LAB]}, headers=JSON)
    assert ok.status_code == 201
    moved = observation("a-lab", "A", VITAL)  # out of the constraint
    assert (await lab.put("Observation/a-lab", json=moved, headers=JSON)).status_code == 403


async def test_a_query_scope_on_a_type_without_that_parameter_reaches_nothing(
        world: World) -> None:
    odd = await world.patient("A", "patient/*.rs?category=laboratory")
    assert ids(await search(odd, "Observation")) == {"Observation/a-lab"}
    assert (await odd.get("Practitioner/doc")).status_code == 403  # no `category` there


async def test_user_scopes_of_a_patient_user_stay_in_their_compartment(world: World) -> None:
    me = await world.client("user/*.cruds", fhir_user="Patient/A")
    assert ids(await search(me, "Observation")) == {"Observation/a-lab",
                                                    "Observation/a-vital"}
    assert (await me.get("Observation/b-lab")).status_code == 404
    assert (await me.get("Practitioner/doc")).status_code == 200
    relative = await world.client("user/*.rs", fhir_user="RelatedPerson/r", patient="B")
    assert ids(await search(relative, "Condition")) == {"Condition/b-cond"}
    lost = await world.client("user/*.rs", fhir_user="RelatedPerson/r")
    assert (await lost.get("Condition/b-cond")).status_code == 403


async def test_v1_scopes_and_system_scopes(world: World) -> None:
    v1 = await world.patient("A", "patient/*.read")
    assert ids(await search(v1, "Condition")) == {"Condition/a-cond"}
    assert (await v1.delete("Condition/a-cond")).status_code == 403
    backend = await world.client("system/*.rs")
    assert ids(await search(backend, "Condition")) == {"Condition/a-cond", "Condition/b-cond"}
