"""No double booking on any write path: REST create/update/patch/delete, transactions,
batches, $book under concurrency (SQLite and MongoDB), capacity and overbooking, and the
Slot's own record of who occupies it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from fhirpm.scheduling import model
from tests.conftest import FHIR_JSON
from tests.scheduling.booking_world import booked, generate, patient, post, practice, slots

DAY = "2026-12-07"


async def _one_day(client: httpx.AsyncClient, **kwargs: Any) -> list[dict[str, Any]]:
    world = await practice(client, **kwargs)
    await generate(client, world["schedule"]["id"], DAY, DAY)
    return await slots(client, world["schedule"]["id"])


async def _slot(client: httpx.AsyncClient, slot_id: str) -> dict[str, Any]:
    return (await client.get(f"Slot/{slot_id}")).json()


def _id_of(entry: dict[str, Any]) -> str:
    """The id in a transaction-response entry's location (`[base/]Type/id/_history/n`)."""
    return entry["response"]["location"].split("/_history")[0].rsplit("/", 1)[1]


def _appointments_total(r: httpx.Response) -> int:
    return sum(e["resource"]["resourceType"] == "Appointment" for e in r.json().get("entry", []))


async def test_a_booked_post_on_a_taken_slot_is_409(client: httpx.AsyncClient) -> None:
    free = await _one_day(client)
    a, b = await patient(client, "A"), await patient(client, "B")
    first = await client.post("Appointment", json=booked(free[0]["id"], a), headers=FHIR_JSON)
    assert first.status_code == 201, first.text
    slot = await _slot(client, free[0]["id"])
    assert slot["status"] == "busy"
    assert model.occupants(slot) == {first.json()["id"]: False}

    second = await client.post("Appointment", json=booked(free[0]["id"], b), headers=FHIR_JSON)
    assert second.status_code == 409
    outcome = second.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "conflict"
    assert "already booked" in outcome["issue"][0]["diagnostics"]
    r = await client.get("Appointment", params={"slot": f"Slot/{free[0]['id']}"})
    assert _appointments_total(r) == 1  # the refused one was not stored

    # a proposed or waitlisted appointment on the same slot takes nothing
    for status in ("proposed", "waitlist"):
        r = await client.post("Appointment", json=booked(free[0]["id"], b, status),
                              headers=FHIR_JSON)
        assert r.status_code == 201, r.text


async def test_status_changes_free_and_take_slots(client: httpx.AsyncClient) -> None:
    free = await _one_day(client)
    a, b = await patient(client, "A"), await patient(client, "B")
    made = (await client.post("Appointment", json=booked(free[0]["id"], a),
                              headers=FHIR_JSON)).json()
    made["status"] = "cancelled"
    assert (await client.put(f"Appointment/{made['id']}", json=made,
                             headers=FHIR_JSON)).status_code == 200
    assert (await _slot(client, free[0]["id"]))["status"] == "free"

    other = await client.post("Appointment", json=booked(free[0]["id"], b), headers=FHIR_JSON)
    assert other.status_code == 201
    made["status"] = "booked"  # un-cancelling onto a slot someone else took: refused
    r = await client.put(f"Appointment/{made['id']}", json=made, headers=FHIR_JSON)
    assert r.status_code == 409
    assert (await client.get(f"Appointment/{made['id']}")).json()["status"] == "cancelled"

    # PATCH and DELETE go through the same rule
    patch = [{"op": "replace", "path": "/status", "value": "noshow"}]
    r = await client.patch(f"Appointment/{other.json()['id']}", json=patch,
                           headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert (await _slot(client, free[0]["id"]))["status"] == "free"
    third = await client.post("Appointment", json=booked(free[1]["id"], a), headers=FHIR_JSON)
    assert (await _slot(client, free[1]["id"]))["status"] == "busy"
    assert (await client.delete(f"Appointment/{third.json()['id']}")).status_code == 204
    slot = await _slot(client, free[1]["id"])
    assert slot["status"] == "free" and not model.occupants(slot)


async def test_moving_an_appointment_frees_the_old_slot(client: httpx.AsyncClient) -> None:
    free = await _one_day(client)
    a = await patient(client)
    made = (await client.post("Appointment", json=booked(free[0]["id"], a),
                              headers=FHIR_JSON)).json()
    made["slot"] = [{"reference": f"Slot/{free[1]['id']}"}]
    assert (await client.put(f"Appointment/{made['id']}", json=made,
                             headers=FHIR_JSON)).status_code == 200
    assert (await _slot(client, free[0]["id"]))["status"] == "free"
    assert (await _slot(client, free[1]["id"]))["status"] == "busy"


async def test_a_transaction_with_two_appointments_on_one_slot_is_refused(
        client: httpx.AsyncClient) -> None:
    free = await _one_day(client)
    a, b = await patient(client, "A"), await patient(client, "B")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": booked(free[0]["id"], a), "request": {"method": "POST",
                                                           "url": "Appointment"}},
        {"resource": booked(free[0]["id"], b), "request": {"method": "POST",
                                                           "url": "Appointment"}}]}
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 409 and r.json()["resourceType"] == "OperationOutcome"
    assert _appointments_total(await client.get("Appointment")) == 0
    slot = await _slot(client, free[0]["id"])
    assert slot["status"] == "free" and slot["meta"]["versionId"] == "1"

    # a batch refuses only the entry that would double-book
    bundle["type"] = "batch"
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    statuses = [e["response"]["status"][:3] for e in r.json()["entry"]]
    assert statuses == ["201", "409"]


async def test_a_slot_and_its_appointment_created_in_one_transaction(
        client: httpx.AsyncClient) -> None:
    world = await practice(client)
    a = await patient(client)
    slot = {"resourceType": "Slot", "schedule": {"reference":
                                                 f"Schedule/{world['schedule']['id']}"},
            "status": "free", "start": "2026-12-07T18:00:00+01:00",
            "end": "2026-12-07T18:30:00+01:00"}
    appointment = booked("x", a)
    appointment["slot"] = [{"reference": "urn:uuid:6c7f7b4e-0000-4000-8000-000000000001"}]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6c7f7b4e-0000-4000-8000-000000000001", "resource": slot,
         "request": {"method": "POST", "url": "Slot"}},
        {"resource": appointment, "request": {"method": "POST", "url": "Appointment"}}]}
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    slot_id = _id_of(r.json()["entry"][0])
    assert (await _slot(client, slot_id))["status"] == "busy"


async def test_occupancy_is_the_servers_record(client: httpx.AsyncClient) -> None:
    free = await _one_day(client)
    a = await patient(client)
    await client.post("Appointment", json=booked(free[0]["id"], a), headers=FHIR_JSON)
    slot = await _slot(client, free[0]["id"])
    cleared = {k: v for k, v in slot.items() if k != "extension"}
    cleared["status"] = "free"
    r = await client.put(f"Slot/{slot['id']}", json=cleared, headers=FHIR_JSON)
    assert r.status_code == 409 and "kept by the server" in r.text
    r = await client.put(f"Slot/{slot['id']}", json={**slot, "status": "free"},
                         headers=FHIR_JSON)
    assert r.status_code == 409 and "full" in r.text
    assert (await client.delete(f"Slot/{slot['id']}")).status_code == 409
    moved = {**slot, "start": free[5]["start"], "end": free[5]["end"]}
    r = await client.put(f"Slot/{slot['id']}", json=moved, headers=FHIR_JSON)
    assert r.status_code == 409 and "$reschedule" in r.text
    r = await client.put(f"Slot/{slot['id']}", json={**slot, "comment": "room 2"},
                         headers=FHIR_JSON)
    assert r.status_code == 200  # anything else about the slot may change
    forged = {**free[1], "extension": [{"url": model.BOOKED_BY,
                                        "valueReference": {"reference": "Appointment/x"}}]}
    r = await client.put(f"Slot/{free[1]['id']}", json=forged, headers=FHIR_JSON)
    assert r.status_code == 409
    # a slot marked busy or unavailable by hand cannot be booked either
    for status in ("busy", "busy-unavailable"):
        hand = await post(client, {**{k: v for k, v in free[2].items()
                                      if k not in ("id", "meta", "identifier")},
                                   "status": status})
        r = await client.post("Appointment", json=booked(hand["id"], a), headers=FHIR_JSON)
        assert r.status_code == 409
    r = await client.post("Appointment", json=booked("missing", a), headers=FHIR_JSON)
    assert r.status_code == 422


async def test_capacity_and_staff_overbooking(client: httpx.AsyncClient,
                                              app: FastAPI) -> None:
    free = await _one_day(client, capacity=2)
    assert model.capacity(free[0]) == 2
    ids = [await patient(client, name) for name in "ABCD"]
    for n, pid in enumerate(ids[:2]):
        r = await client.post("Appointment", json=booked(free[0]["id"], pid),
                              headers=FHIR_JSON)
        assert r.status_code == 201
        assert (await _slot(client, free[0]["id"]))["status"] == ("free" if n == 0 else "busy")
    r = await client.post("Appointment", json=booked(free[0]["id"], ids[2]), headers=FHIR_JSON)
    assert r.status_code == 409

    proposal = booked(free[0]["id"], ids[2], "proposed")
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "appointment", "resource": proposal},
        {"name": "overbook", "valueBoolean": True}]}
    r = await client.post("Appointment/$book", json=params, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    slot = await _slot(client, free[0]["id"])
    assert slot["overbooked"] is True and len(model.occupants(slot)) == 3

    from tests.bearer import bearer, mint

    token = await mint(app.state.auth, "patient/Appointment.cruds patient/Slot.rs",
                       patient=ids[3])
    params["parameter"][0]["resource"] = booked(free[0]["id"], ids[3], "proposed")
    r = await client.post("Appointment/$book", json=params,
                          headers={**FHIR_JSON, **bearer(token)})
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"


async def _concurrent_bookings(client: httpx.AsyncClient, n: int) -> None:
    schedule = await post(client, {"resourceType": "Schedule",
                                   "actor": [{"reference": "Practitioner/doc"}]})
    target = (await post(client, {"resourceType": "Slot", "status": "free",
                                  "schedule": {"reference": f"Schedule/{schedule['id']}"},
                                  "start": "2026-12-07T09:00:00Z",
                                  "end": "2026-12-07T09:15:00Z"}))["id"]
    patients = [f"p{i}" for i in range(n)]  # references need not resolve for this

    async def book(pid: str) -> httpx.Response:
        return await client.post("Appointment/$book", json={
            "resourceType": "Parameters", "parameter": [
                {"name": "appointment", "resource": booked(target, pid, "proposed")},
                {"name": "patient", "valueReference": {"reference": f"Patient/{pid}"}}]},
            headers=FHIR_JSON)

    answers = await asyncio.gather(*(book(pid) for pid in patients))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] + [409] * (n - 1), statuses
    for r in answers:
        if r.status_code == 409:
            issue = r.json()["issue"][0]
            assert issue["code"] == "conflict" and "Slot/" in issue["diagnostics"]
    r = await client.get("Appointment", params={"slot": f"Slot/{target}", "status": "booked"})
    assert _appointments_total(r) == 1
    slot = await _slot(client, target)
    winner = next(a for a in answers if a.status_code == 201).json()["entry"][0]["resource"]
    assert slot["status"] == "busy" and model.occupants(slot) == {winner["id"]: False}


async def test_fifty_concurrent_bookings_of_one_slot_sqlite(client: httpx.AsyncClient) -> None:
    await _concurrent_bookings(client, 50)


async def test_fifty_concurrent_bookings_of_one_slot_mongo(
        mongo_client: httpx.AsyncClient) -> None:
    await _concurrent_bookings(mongo_client, 50)
