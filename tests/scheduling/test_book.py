"""Appointment/$book, $reschedule and $cancel over HTTP with real tokens: a patient books,
moves and cancels their own visit and never sees or touches anyone else's; staff book for
anyone; multi-slot bookings take all of their Slots or none."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.scheduling import model
from tests.bearer import bearer, mint
from tests.conftest import FHIR_JSON
from tests.scheduling.booking_world import booked, generate, patient, practice

DAY = "2026-12-07"
SCOPES = "patient/Appointment.cruds patient/Slot.rs patient/Schedule.rs"


def _params(**values: Any) -> dict[str, Any]:
    out = []
    for name, value in values.items():
        if isinstance(value, dict):
            out.append({"name": name, "resource": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


def _stored(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    return r.json()["entry"][0]["resource"]


async def _status(client: httpx.AsyncClient, reference: str) -> str:
    return (await client.get(reference)).json()["status"]


@pytest.fixture
async def world(client: httpx.AsyncClient) -> dict[str, Any]:
    made = await practice(client)
    await generate(client, made["schedule"]["id"], DAY, DAY)
    return made


async def _find(client: httpx.AsyncClient, world: dict[str, Any],
                headers: dict[str, str] | None = None, **params: str) -> list[dict[str, Any]]:
    r = await client.get("Appointment/$find", headers=headers or {}, params={
        "practitioner": f"Practitioner/{world['doctor']['id']}",
        "start": f"{DAY}T00:00:00+01:00", "end": f"{DAY}T23:00:00+01:00", **params})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json()["entry"]]


async def test_a_patient_books_reschedules_and_cancels(client: httpx.AsyncClient,
                                                       app: FastAPI,
                                                       world: dict[str, Any]) -> None:
    me = await patient(client, "Me")
    token = {**FHIR_JSON, **bearer(await mint(app.state.auth, SCOPES, patient=me))}
    proposals = await _find(client, world, token)
    r = await client.post("Appointment/$book", json=_params(appointment=proposals[0]),
                          headers=token)
    assert r.status_code == 201
    visit = _stored(r)
    assert visit["status"] == "booked" and visit["start"] == proposals[0]["start"]
    assert r.headers["Location"].startswith(f"http://testserver/fhir/Appointment/{visit['id']}")
    first = proposals[0]["slot"][0]["reference"]
    assert await _status(client, first) == "busy"

    r = await client.post(f"Appointment/{visit['id']}/$reschedule",
                          json=_params(appointment=proposals[3]), headers=token)
    moved = _stored(r)
    assert moved["id"] == visit["id"] and moved["start"] == proposals[3]["start"]
    assert moved["slot"] == proposals[3]["slot"] and moved["status"] == "booked"
    assert await _status(client, first) == "free"
    assert await _status(client, proposals[3]["slot"][0]["reference"]) == "busy"

    r = await client.post(f"Appointment/{visit['id']}/$cancel",
                          json=_params(reason="Feeling better"), headers=token)
    gone = _stored(r)
    assert gone["status"] == "cancelled" and gone["cancelationReason"]["text"] == \
        "Feeling better"
    assert gone["cancelationReason"]["coding"][0]["code"] == "patient"
    assert await _status(client, proposals[3]["slot"][0]["reference"]) == "free"
    r = await client.post(f"Appointment/{visit['id']}/$reschedule",
                          json=_params(appointment=proposals[4]), headers=token)
    assert r.status_code == 422  # a cancelled visit is booked anew, not moved


async def test_patients_never_touch_each_others_appointments(
        client: httpx.AsyncClient, app: FastAPI, world: dict[str, Any]) -> None:
    a, b = await patient(client, "A"), await patient(client, "B")
    token_a = {**FHIR_JSON, **bearer(await mint(app.state.auth, SCOPES, patient=a))}
    token_b = {**FHIR_JSON, **bearer(await mint(app.state.auth, SCOPES, patient=b))}
    proposals = await _find(client, world, token_a)
    visit = _stored(await client.post("Appointment/$book",
                                      json=_params(appointment=proposals[0]),
                                      headers=token_a))

    # B sees nothing of A's visit: read, search, cancel, move, rebook are all "not known"
    assert (await client.get(f"Appointment/{visit['id']}", headers=token_b)).status_code == 404
    r = await client.get("Appointment", headers=token_b)
    assert "entry" not in r.json()
    for op in ("$cancel", "$reschedule"):
        r = await client.post(f"Appointment/{visit['id']}/{op}",
                              json=_params(appointment=proposals[1]), headers=token_b)
        assert r.status_code == 404, (op, r.text)
    r = await client.post("Appointment/$book", json=_params(appointment=visit),
                          headers=token_b)
    assert r.status_code == 404
    # ... and cannot book in A's name, by parameter or by participant
    r = await client.post("Appointment/$book", json=_params(
        appointment=proposals[1], patient=f"Patient/{a}"), headers=token_b)
    assert r.status_code == 403
    for_a = {**proposals[1], "participant": [*proposals[1]["participant"], {
        "actor": {"reference": f"Patient/{a}"}, "status": "needs-action"}]}
    r = await client.post("Appointment/$book", json=_params(appointment=for_a),
                          headers=token_b)
    assert r.status_code == 403
    r = await client.post("Appointment", json=booked(
        proposals[1]["slot"][0]["reference"].split("/")[1], a), headers=token_b)
    assert r.status_code == 403
    assert await _status(client, proposals[1]["slot"][0]["reference"]) == "free"
    assert (await client.get(f"Appointment/{visit['id']}")).json()["status"] == "booked"


async def test_staff_book_for_anyone_and_rebooking_is_idempotent(
        client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    pid = await patient(client)
    proposal = (await _find(client, world))[0]
    r = await client.post("Appointment/$book",
                          json=_params(appointment=proposal, patient=f"Patient/{pid}"),
                          headers=FHIR_JSON)
    visit = _stored(r)
    assert r.status_code == 201
    assert {"reference": f"Patient/{pid}"} in [p["actor"] for p in visit["participant"]]
    again = await client.post("Appointment/$book", json=_params(appointment=visit),
                              headers=FHIR_JSON)
    assert again.status_code == 200 and _stored(again)["meta"]["versionId"] == "1"
    r = await client.post("Appointment/$book", json=_params(appointment=proposal,
                                                            patient=f"Patient/{pid}"),
                          headers=FHIR_JSON)
    assert r.status_code == 409  # the proposal's slot is this visit's now


async def test_a_multi_slot_booking_takes_all_or_nothing(client: httpx.AsyncClient,
                                                         world: dict[str, Any]) -> None:
    a, b = await patient(client, "A"), await patient(client, "B")
    long_visit = (await _find(client, world, duration="90"))[0]
    assert len(long_visit["slot"]) == 3
    last = long_visit["slot"][2]["reference"]
    assert (await client.post("Appointment", json=booked(last.split("/")[1], b),
                              headers=FHIR_JSON)).status_code == 201
    r = await client.post("Appointment/$book", json=_params(appointment=long_visit,
                                                            patient=f"Patient/{a}"),
                          headers=FHIR_JSON)
    assert r.status_code == 409
    for ref in long_visit["slot"][:2]:
        slot = (await client.get(ref["reference"])).json()
        assert slot["status"] == "free" and slot["meta"]["versionId"] == "1"

    ok = (await _find(client, world, duration="90"))[-1]
    visit = _stored(await client.post("Appointment/$book", json=_params(
        appointment=ok, patient=f"Patient/{a}"), headers=FHIR_JSON))
    assert visit["minutesDuration"] == 90
    for ref in ok["slot"]:
        slot = (await client.get(ref["reference"])).json()
        assert model.occupants(slot) == {visit["id"]: False}


async def test_rescheduling_onto_a_taken_slot_changes_nothing(
        client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    a, b = await patient(client, "A"), await patient(client, "B")
    proposals = await _find(client, world)
    mine = _stored(await client.post("Appointment/$book", json=_params(
        appointment=proposals[0], patient=f"Patient/{a}"), headers=FHIR_JSON))
    _stored(await client.post("Appointment/$book", json=_params(
        appointment=proposals[1], patient=f"Patient/{b}"), headers=FHIR_JSON))
    r = await client.post(f"Appointment/{mine['id']}/$reschedule", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "slot", "valueReference": proposals[1]["slot"][0]}]},
        headers=FHIR_JSON)
    assert r.status_code == 409
    assert (await client.get(f"Appointment/{mine['id']}")).json()["meta"]["versionId"] == "1"
    assert await _status(client, proposals[0]["slot"][0]["reference"]) == "busy"
    r = await client.post(f"Appointment/{mine['id']}/$reschedule",
                          json=_params(slot="Patient/x"), headers=FHIR_JSON)
    assert r.status_code == 400
    r = await client.post("Appointment/missing/$cancel", json=_params(reason="x"),
                          headers=FHIR_JSON)
    assert r.status_code == 404
