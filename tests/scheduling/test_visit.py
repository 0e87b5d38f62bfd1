"""The visit over HTTP with real tokens: staff check a patient in and out (the Encounter
follows, in the same unit of work, on REST, PATCH and transaction paths), no-shows,
cancellations (with and without the reason policy), and the charge-capture events a
billing consumer reads from the change log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.config import SchedulingSettings, Settings
from fhirpm.scheduling import visit
from tests.bearer import bearer, mint
from tests.conftest import FHIR_JSON


async def _post(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(resource["resourceType"], json=resource, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()


async def _people(client: httpx.AsyncClient) -> tuple[str, str, str]:
    patient = await _post(client, {"resourceType": "Patient", "name": [{"family": "Ng"}]})
    doctor = await _post(client, {"resourceType": "Practitioner", "name": [{"family": "Ode"}]})
    room = await _post(client, {"resourceType": "Location", "name": "Room 1"})
    return patient["id"], doctor["id"], room["id"]


def _appointment(patient: str, doctor: str, room: str, status: str = "booked",
                 **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": status,
            "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                         "service-type", "code": "124"}]}],
            "start": "2030-03-04T09:00:00Z", "end": "2030-03-04T09:15:00Z",
            "participant": [
                {"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"},
                {"actor": {"reference": f"Practitioner/{doctor}"}, "status": "accepted",
                 "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                       "v3-ParticipationType", "code": "PPRF"}]}]},
                {"actor": {"reference": f"Location/{room}"}, "status": "accepted"}],
            **extra}


async def _set_status(client: httpx.AsyncClient, appointment: dict[str, Any],
                      status: str, **extra: Any) -> httpx.Response:
    current = (await client.get(f"Appointment/{appointment['id']}")).json()
    return await client.put(f"Appointment/{appointment['id']}",
                            json={**current, "status": status, **extra}, headers=FHIR_JSON)


async def _encounter(client: httpx.AsyncClient, appointment_id: str) -> httpx.Response:
    return await client.get(f"Encounter/{visit.encounter_id(appointment_id)}")


async def test_check_in_and_out(client: httpx.AsyncClient, app: FastAPI) -> None:
    patient, doctor, room = await _people(client)
    appt = await _post(client, _appointment(patient, doctor, room))
    assert (await _encounter(client, appt["id"])).status_code == 404  # booked: no visit yet

    assert (await _set_status(client, appt, "arrived")).status_code == 200
    enc = (await _encounter(client, appt["id"])).json()
    assert enc["status"] == "arrived"
    assert enc["subject"] == {"reference": f"Patient/{patient}"}
    assert enc["appointment"] == [{"reference": f"Appointment/{appt['id']}"}]
    assert enc["participant"][0]["individual"] == {"reference": f"Practitioner/{doctor}"}
    assert enc["location"] == [{"location": {"reference": f"Location/{room}"}}]
    assert enc["class"]["code"] == "AMB"
    assert enc["identifier"] == [{"system": visit.ENCOUNTER_OF, "value": appt["id"]}]
    arrived_at = (await client.get(f"Appointment/{appt['id']}")).json()["meta"]["lastUpdated"]
    assert enc["period"] == {"start": arrived_at}

    assert (await _set_status(client, appt, "checked-in")).status_code == 200
    enc = (await _encounter(client, appt["id"])).json()
    assert enc["status"] == "in-progress" and "end" not in enc["period"]
    assert [h["status"] for h in enc["statusHistory"]] == ["arrived", "in-progress"]

    assert (await _set_status(client, appt, "fulfilled")).status_code == 200
    enc = (await _encounter(client, appt["id"])).json()
    out_at = (await client.get(f"Appointment/{appt['id']}")).json()["meta"]["lastUpdated"]
    assert enc["status"] == "finished"
    assert enc["period"] == {"start": arrived_at, "end": out_at}
    assert enc["statusHistory"][-1] == {"status": "finished", "period": {"start": out_at}}
    assert enc["statusHistory"][0]["period"]["end"] == enc["statusHistory"][1]["period"]["start"]

    # one Encounter for the appointment, found by search too
    found = (await client.get("Encounter", params={"appointment": f"Appointment/{appt['id']}"}))
    assert found.json()["total"] == 1


async def test_repeats_and_retries_update_one_encounter(client: httpx.AsyncClient) -> None:
    patient, doctor, room = await _people(client)
    appt = await _post(client, _appointment(patient, doctor, room, status="arrived"))
    enc = (await _encounter(client, appt["id"])).json()  # created directly as arrived
    assert enc["status"] == "arrived" and enc["meta"]["versionId"] == "1"
    # the same status again (a retry, a note added) changes nothing
    r = await _set_status(client, appt, "arrived", comment="waiting room 2")
    assert r.status_code == 200
    assert (await _encounter(client, appt["id"])).json()["meta"]["versionId"] == "1"
    # a mistaken check-in undone, then redone: still the one Encounter
    await _set_status(client, appt, "booked")
    assert (await _encounter(client, appt["id"])).json()["status"] == "planned"
    await _set_status(client, appt, "checked-in")
    enc = (await _encounter(client, appt["id"])).json()
    assert enc["status"] == "in-progress"
    assert [h["status"] for h in enc["statusHistory"]] == ["arrived", "planned", "in-progress"]
    assert (await client.get("Encounter")).json()["total"] == 1


async def test_patch_and_transaction_paths(client: httpx.AsyncClient) -> None:
    patient, doctor, room = await _people(client)
    appt = await _post(client, _appointment(patient, doctor, room))
    patch = [{"op": "replace", "path": "/status", "value": "checked-in"}]
    r = await client.patch(f"Appointment/{appt['id']}", json=patch,
                           headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert (await _encounter(client, appt["id"])).json()["status"] == "in-progress"

    current = (await client.get(f"Appointment/{appt['id']}")).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**current, "status": "fulfilled"},
         "request": {"method": "PUT", "url": f"Appointment/{appt['id']}"}}]}
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert (await _encounter(client, appt["id"])).json()["status"] == "finished"


async def test_a_failed_transaction_leaves_no_encounter(client: httpx.AsyncClient) -> None:
    patient, doctor, room = await _people(client)
    appt = await _post(client, _appointment(patient, doctor, room))
    current = (await client.get(f"Appointment/{appt['id']}")).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**current, "status": "arrived"},
         "request": {"method": "PUT", "url": f"Appointment/{appt['id']}"}},
        {"resource": {"resourceType": "Observation"},  # invalid: no status, no code
         "request": {"method": "POST", "url": "Observation"}}]}
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 400
    assert (await _encounter(client, appt["id"])).status_code == 404
    assert (await client.get(f"Appointment/{appt['id']}")).json()["status"] == "booked"


async def test_no_show_and_cancellation(client: httpx.AsyncClient) -> None:
    patient, doctor, room = await _people(client)
    missed = await _post(client, _appointment(patient, doctor, room))
    assert (await _set_status(client, missed, "noshow")).status_code == 200
    assert (await _encounter(client, missed["id"])).status_code == 404  # no visit happened
    found = await client.get("Appointment", params={"status": "noshow",
                                                    "patient": f"Patient/{patient}"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [missed["id"]]

    # arrived, then left before being seen and marked no-show: the Encounter is cancelled
    left = await _post(client, _appointment(patient, doctor, room, status="arrived"))
    await _set_status(client, left, "noshow")
    assert (await _encounter(client, left["id"])).json()["status"] == "cancelled"

    reason = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                          "appointment-cancellation-reason", "code": "pat"}]}
    gone = await _post(client, _appointment(patient, doctor, room))
    r = await _set_status(client, gone, "cancelled", cancelationReason=reason)
    assert r.status_code == 200 and r.json()["cancelationReason"] == reason
    # the reason policy is off by default: a bare cancellation is accepted
    bare = await _post(client, _appointment(patient, doctor, room))
    assert (await _set_status(client, bare, "cancelled")).status_code == 200

    # a check-in entered in error: the Encounter goes with it
    wrong = await _post(client, _appointment(patient, doctor, room, status="checked-in"))
    await _set_status(client, wrong, "entered-in-error")
    assert (await _encounter(client, wrong["id"])).json()["status"] == "entered-in-error"

    # a finished visit is not undone by cancelling its booking afterwards
    seen = await _post(client, _appointment(patient, doctor, room, status="arrived"))
    await _set_status(client, seen, "fulfilled")
    await _set_status(client, seen, "cancelled")
    assert (await _encounter(client, seen["id"])).json()["status"] == "finished"


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The shared settings; tests named `*strict*` require cancellation reasons."""
    strict = "strict" in request.node.name
    return settings.model_copy(update={
        "scheduling": SchedulingSettings(require_cancel_reason=strict)})


async def test_strict_cancel_reason(client: httpx.AsyncClient) -> None:
    patient, doctor, room = await _people(client)
    appt = await _post(client, _appointment(patient, doctor, room, status="arrived"))
    r = await _set_status(client, appt, "cancelled")
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Appointment.cancelationReason"]
    # refused as a whole: neither the Appointment nor its Encounter moved
    assert (await client.get(f"Appointment/{appt['id']}")).json()["status"] == "arrived"
    assert (await _encounter(client, appt["id"])).json()["status"] == "arrived"
    reason = {"text": "patient is unwell"}
    r = await _set_status(client, appt, "cancelled", cancelationReason=reason)
    assert r.status_code == 200
    assert (await _encounter(client, appt["id"])).json()["status"] == "cancelled"


async def test_check_in_needs_encounter_write_permission(client: httpx.AsyncClient,
                                                         app: FastAPI) -> None:
    patient, doctor, room = await _people(client)
    appt = await _post(client, _appointment(patient, doctor, room))
    token = await mint(app.state.auth, "user/Appointment.cruds", fhir_user="Practitioner/x")
    current = (await client.get(f"Appointment/{appt['id']}")).json()
    r = await client.put(f"Appointment/{appt['id']}", json={**current, "status": "arrived"},
                         headers={**FHIR_JSON, **bearer(token)})
    assert r.status_code == 403
    assert "Encounter" in r.json()["issue"][0]["diagnostics"]
    assert (await client.get(f"Appointment/{appt['id']}")).json()["status"] == "booked"


async def test_charge_capture_events(client: httpx.AsyncClient, app: FastAPI) -> None:
    patient, doctor, room = await _people(client)
    first = await _post(client, _appointment(patient, doctor, room, status="arrived"))
    second = await _post(client, _appointment(patient, doctor, room, status="arrived"))
    await _set_status(client, first, "fulfilled")
    seen: list[visit.ChargeCapture] = []

    async def bill(events: list[visit.ChargeCapture]) -> None:
        seen.extend(events)

    feed = app.state.changes
    handler = visit.charge_capture_handler(bill)
    await feed.catch_up("billing-test", handler)
    assert [e.appointment for e in seen] == [f"Appointment/{first['id']}"]
    event = seen[0]
    enc = (await _encounter(client, first["id"])).json()
    assert event.key == f"Encounter/{enc['id']}|{enc['period']['end']}"
    assert event.patient == f"Patient/{patient}" and event.end == enc["period"]["end"]
    assert event.encounter == enc

    # the cursor is durable: only what is new is delivered next time
    await _set_status(client, second, "fulfilled")
    await feed.catch_up("billing-test", handler)
    assert [e.appointment for e in seen[1:]] == [f"Appointment/{second['id']}"]
    # a later edit of a finished visit is delivered again under the same key
    enc = (await _encounter(client, first["id"])).json()
    enc["reasonCode"] = [{"text": "follow-up"}]
    assert (await client.put(f"Encounter/{enc['id']}", json=enc,
                             headers=FHIR_JSON)).status_code == 200
    await feed.catch_up("billing-test", handler)
    assert seen[-1].key == event.key and seen[-1].version > event.version
