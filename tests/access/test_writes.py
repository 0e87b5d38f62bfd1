"""Writes under patient/ scopes touch only the patient's compartment: creating outside it,
changing or deleting another patient's resource, moving a resource out of the compartment
(by update or patch) and conditional writes matching another patient's data are refused
(403) and change nothing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.access.conftest import LAB, World, condition, observation

JSON = {"Content-Type": "application/fhir+json"}
PATCH = {"Content-Type": "application/json-patch+json"}


def refused(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert r.json()["issue"][0]["code"] == "forbidden"


async def version(world: World, path: str) -> str:
    return (await world.staff.get(path)).headers["etag"]


async def test_create_inside_the_compartment_only(world: World) -> None:
    a = await world.patient("A")
    own = {k: v for k, v in observation("x", "A", LAB).items() if k != "id"}
    assert (await a.post("Observation", json=own, headers=JSON)).status_code == 201
    other = {**own, "subject": {"reference": "Patient/B"}}
    refused(await a.post("Observation", json=other, headers=JSON))
    nobody = {k: v for k, v in own.items() if k != "subject"}
    refused(await a.post("Observation", json=nobody, headers=JSON))
    refused(await a.put("Observation/new-b", json={**other, "id": "new-b"}, headers=JSON))
    refused(await a.post("Patient", json={"resourceType": "Patient"}, headers=JSON))
    assert (await world.staff.get("Observation/new-b")).status_code == 404
    total = (await world.staff.get("Observation", params={"_total": "accurate"})).json()
    assert total["total"] == 5  # the four loaded and A's new one


async def test_another_patients_resource_cannot_be_changed_or_deleted(world: World) -> None:
    a = await world.patient("A")
    before = await version(world, "Observation/b-lab")
    hijack = observation("b-lab", "A", LAB)  # rewritten as if it were A's
    refused(await a.put("Observation/b-lab", json=hijack, headers=JSON))
    refused(await a.patch("Observation/b-lab", headers=PATCH,
                          json=[{"op": "replace", "path": "/status", "value": "amended"}]))
    refused(await a.delete("Observation/b-lab"))
    refused(await a.delete("Patient/B"))
    for if_match in ('W/"1"', 'W/"2"'):  # a 412 would tell B's current version
        refused(await a.put("Observation/b-lab", json=hijack,
                            headers={**JSON, "If-Match": if_match}))
        refused(await a.delete("Observation/b-lab", headers={"If-Match": if_match}))
    assert await version(world, "Observation/b-lab") == before


async def test_a_resource_cannot_be_moved_out_of_the_compartment(world: World) -> None:
    a = await world.patient("A")
    before = await version(world, "Observation/a-lab")
    moved = observation("a-lab", "B", LAB)
    refused(await a.put("Observation/a-lab", json=moved, headers=JSON))
    refused(await a.patch("Observation/a-lab", headers=PATCH, json=[
        {"op": "replace", "path": "/subject/reference", "value": "Patient/B"}]))
    refused(await a.patch("Observation/a-lab", headers=PATCH, json=[
        {"op": "remove", "path": "/subject"}]))
    assert await version(world, "Observation/a-lab") == before
    kept = observation("a-lab", "A", LAB, value="9")
    assert (await a.put("Observation/a-lab", json=kept, headers=JSON)).status_code == 200
    assert (await a.patch("Observation/a-lab", headers=PATCH, json=[
        {"op": "replace", "path": "/status", "value": "amended"}])).status_code == 200
    assert (await a.delete("Observation/a-lab")).status_code == 204


async def test_conditional_writes_match_only_inside_the_compartment(world: World) -> None:
    a = await world.patient("A")
    body = {**condition("ignored", "A"), "code": {"text": "asthma"}}
    del body["id"]
    # If-None-Exist matching only B's data: no match for A, so A's own is created
    r = await a.post("Condition", json=body, headers={**JSON, "If-None-Exist": "_id=b-cond"})
    assert r.status_code == 201, r.text
    # conditional update / patch / delete by criteria that only B's resource meets
    change = observation("ignored", "A", LAB)
    del change["id"]
    r = await a.put("Observation", params={"_id": "b-lab"}, json=change, headers=JSON)
    assert r.status_code == 201  # no match within reach: a create, of A's own
    r = await a.patch("Observation", params={"_id": "b-vital"}, headers=PATCH,
                      json=[{"op": "replace", "path": "/status", "value": "amended"}])
    assert r.status_code == 404
    assert (await a.delete("Observation", params={"_id": "b-vital"})).status_code == 204
    assert (await world.staff.get("Observation/b-vital")).status_code == 200
    assert (await world.staff.get("Observation/b-lab")).json()["subject"] == {
        "reference": "Patient/B"}


async def test_a_conditional_create_does_not_hand_over_another_patients_match(
        world: World) -> None:
    """Criteria confined to A's compartment are other criteria than B's: A's create does
    not collide with B's unique key, and never answers with B's resource."""
    criteria = {"If-None-Exist": "code:text=peanut"}
    b = await world.patient("B")
    allergy: dict[str, Any] = {"resourceType": "Condition", "code": {"text": "peanut"},
                               "subject": {"reference": "Patient/B"}}
    assert (await b.post("Condition", json=allergy, headers={**JSON, **criteria})
            ).status_code == 201
    a = await world.patient("A")
    mine = {**allergy, "subject": {"reference": "Patient/A"}}
    r = await a.post("Condition", json=mine, headers={**JSON, **criteria})
    assert r.status_code == 201, r.text
    assert r.json()["subject"] == {"reference": "Patient/A"}
    again = await a.post("Condition", json=mine, headers={**JSON, **criteria})
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    mine_only = (await a.get("Condition", params={"code:text": "peanut"})).json()
    assert len(mine_only["entry"]) == 1


async def test_write_letters_are_enforced(world: World) -> None:
    read_only = await world.patient("A", "patient/*.rs")
    refused(await read_only.put("Observation/a-lab", json=observation("a-lab", "A", LAB),
                                headers=JSON))
    create_only = await world.patient("A", "patient/Observation.c")
    body = {k: v for k, v in observation("x", "A", LAB).items() if k != "id"}
    assert (await create_only.post("Observation", json=body, headers=JSON)).status_code == 201
    refused(await create_only.delete("Observation/a-lab"))
    refused(await create_only.get("Observation/a-lab"))


async def test_user_and_system_scopes_are_unbounded(world: World) -> None:
    nurse = await world.client("user/Observation.cruds", fhir_user="Practitioner/nurse")
    moved = observation("b-lab", "A", LAB)
    assert (await nurse.put("Observation/b-lab", json=moved, headers=JSON)).status_code == 200
    backend = await world.client("system/Observation.cud")
    assert (await backend.delete("Observation/b-lab")).status_code == 204
