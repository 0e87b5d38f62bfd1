"""Appointment/$find: proposed appointments over free Slots, filtered by practitioner,
location, service type, specialty, visit type and window; multi-slot proposals; patients
find free time with their own tokens."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.bearer import bearer, mint
from tests.conftest import FHIR_JSON
from tests.scheduling.booking_world import booked, generate, patient, practice

DAY = "2026-12-07"  # a Monday; Berlin is UTC+1 in December
WINDOW = {"start": "2026-12-07T00:00:00+01:00", "end": "2026-12-08T00:00:00+01:00"}
PATIENT_SCOPES = "patient/Appointment.cruds patient/Slot.rs patient/Schedule.rs"


async def _find(client: httpx.AsyncClient, headers: dict[str, str] | None = None,
                **params: str) -> httpx.Response:
    return await client.get("Appointment/$find", params={**WINDOW, **params},
                            headers=headers or {})


def _proposals(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return [e["resource"] for e in body.get("entry", [])]


async def _two_practices(client: httpx.AsyncClient) -> tuple[dict, dict]:
    one = await practice(client)
    two = await practice(client, minutes=60, virtual=True)
    for world in (one, two):
        await generate(client, world["schedule"]["id"], DAY, DAY)
    return one, two


async def test_find_by_practitioner_and_location(client: httpx.AsyncClient) -> None:
    one, two = await _two_practices(client)
    found = _proposals(await _find(client, practitioner=f"Practitioner/{one['doctor']['id']}"))
    assert len(found) == 14
    first = found[0]
    assert first["status"] == "proposed" and "id" not in first
    assert first["start"] == "2026-12-07T09:00:00+01:00" and first["minutesDuration"] == 30
    assert first["slot"] == [{"reference": f"Slot/{one['schedule']['id']}-202612070800"}]
    assert {"reference": f"PractitionerRole/{one['role']['id']}"} in [
        p["actor"] for p in first["participant"]]
    assert [p["start"] for p in found] == sorted(p["start"] for p in found)

    at_two = _proposals(await _find(client, location=f"Location/{two['location']['id']}"))
    assert len(at_two) == 7 and all(p["minutesDuration"] == 60 for p in at_two)
    both = _proposals(await _find(client))
    assert len(both) == 21
    none = _proposals(await _find(client, practitioner=f"Practitioner/{one['doctor']['id']}",
                                  location=f"Location/{two['location']['id']}"))
    assert none == []


async def test_booked_slots_and_times_outside_the_window_are_left_out(
        client: httpx.AsyncClient) -> None:
    one, _ = await _two_practices(client)
    doctor = f"Practitioner/{one['doctor']['id']}"
    first = _proposals(await _find(client, practitioner=doctor))[0]
    pid = await patient(client)
    slot_id = first["slot"][0]["reference"].split("/")[1]
    assert (await client.post("Appointment", json=booked(slot_id, pid),
                              headers=FHIR_JSON)).status_code == 201
    found = _proposals(await _find(client, practitioner=doctor))
    assert len(found) == 13 and found[0]["start"] == "2026-12-07T09:30:00+01:00"
    afternoon = _proposals(await client.get("Appointment/$find", params={
        "practitioner": doctor, "start": "2026-12-07T14:00:00+01:00",
        "end": "2026-12-07T15:00:00+01:00"}))
    assert [p["start"][11:16] for p in afternoon] == ["14:00", "14:30"]
    assert len(_proposals(await _find(client, practitioner=doctor, _count="3"))) == 3


async def test_service_type_specialty_and_visit_type(client: httpx.AsyncClient) -> None:
    _, two = await _two_practices(client)
    virtual = _proposals(await _find(client, **{"visit-type": "virtual"}))
    assert len(virtual) == 7
    assert all(p["slot"][0]["reference"].startswith(f"Slot/{two['schedule']['id']}")
               for p in virtual)
    in_person = _proposals(await _find(client, **{"visit-type": "in-person"}))
    assert len(in_person) == 14
    gp = "http://terminology.hl7.org/CodeSystem/service-type|124"
    assert len(_proposals(await _find(client, **{"service-type": gp}))) == 21
    other = "http://terminology.hl7.org/CodeSystem/service-type|57"
    assert _proposals(await _find(client, **{"service-type": other})) == []
    assert _proposals(await _find(client, specialty="http://snomed.info/sct|394814009")) == []


async def test_longer_visits_join_consecutive_slots(client: httpx.AsyncClient) -> None:
    one, _ = await _two_practices(client)
    found = _proposals(await _find(client, duration="60",
                                   practitioner=f"Practitioner/{one['doctor']['id']}"))
    starts = [p["start"][11:16] for p in found]
    # 09:00-12:00 and 13:00-17:00 in 30-minute slots: no hour across the lunch break
    assert starts == ["09:00", "09:30", "10:00", "10:30", "11:00", "13:00", "13:30",
                      "14:00", "14:30", "15:00", "15:30", "16:00"]
    assert all(len(p["slot"]) == 2 and p["minutesDuration"] == 60 for p in found)
    assert found[0]["end"] == "2026-12-07T10:00:00+01:00"


async def test_a_patient_finds_free_time_for_themselves(client: httpx.AsyncClient,
                                                        app: FastAPI) -> None:
    one, _ = await _two_practices(client)
    me, other = await patient(client, "Me"), await patient(client, "Other")
    token = bearer(await mint(app.state.auth, PATIENT_SCOPES, patient=me))
    found = _proposals(await _find(client, token,
                                   practitioner=f"Practitioner/{one['doctor']['id']}"))
    assert len(found) == 14
    assert {"reference": f"Patient/{me}"} in [p["actor"] for p in found[0]["participant"]]
    r = await _find(client, token, patient=f"Patient/{other}")
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    no_slots = bearer(await mint(app.state.auth, "patient/Appointment.cruds", patient=me))
    assert (await _find(client, no_slots)).status_code == 403


async def test_bad_inputs_are_400s(client: httpx.AsyncClient) -> None:
    for params in ({"start": "2026-12-08", "end": "2026-12-07"}, {"start": "soon"},
                   {"visit-type": "phone"}, {"practitioner": "Patient/1"},
                   {"duration": "-5"}, {"_count": "many"}):
        r = await client.get("Appointment/$find", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    r = await client.get("Appointment/$find", params={"start": "2026-01-01",
                                                      "end": "2028-01-01"})
    assert r.status_code == 403  # too costly
    r = await client.post("Appointment/$find", json={"resourceType": "Parameters",
                                                     "parameter": [{"name": "start",
                                                                    "valueDateTime": "x"}]},
                          headers=FHIR_JSON)
    assert r.status_code == 400


async def test_find_and_book_on_mongo(mongo_client: httpx.AsyncClient) -> None:
    """The same searches (the start-window clause included) through the MongoDB adapter."""
    world = await practice(mongo_client)
    await generate(mongo_client, world["schedule"]["id"], DAY, DAY)
    doctor = f"Practitioner/{world['doctor']['id']}"
    found = _proposals(await _find(mongo_client, practitioner=doctor, _count="3"))
    assert [p["start"][11:16] for p in found] == ["09:00", "09:30", "10:00"]
    pid = await patient(mongo_client)
    r = await mongo_client.post("Appointment/$book", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "appointment", "resource": found[0]},
            {"name": "patient", "valueReference": {"reference": f"Patient/{pid}"}}]},
        headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    again = _proposals(await _find(mongo_client, practitioner=doctor, _count="1"))
    assert again[0]["start"][11:16] == "09:30"
