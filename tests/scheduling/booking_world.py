"""A small practice for the scheduling tests: a Location with a time zone, a Practitioner,
a PractitionerRole with weekly hours and a lunch break, a Schedule, and its Slots made by
`$generate-slots` over the real HTTP API (a staff client)."""

from __future__ import annotations

from typing import Any

import httpx

from fhirpm.scheduling import model
from tests.conftest import FHIR_JSON

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
GP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-type",
                  "code": "124", "display": "General Practice"}]}


async def post(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(resource["resourceType"], json=resource, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()


async def practice(client: httpx.AsyncClient, *, zone: str = "Europe/Berlin",
                   minutes: int = 30, capacity: int | None = None, virtual: bool = False,
                   role_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Location, Practitioner, PractitionerRole (Mon-Fri 09-12 and 13-17) and a Schedule."""
    location = await post(client, {"resourceType": "Location", "name": "Main St",
                                   "extension": [{"url": model.TIMEZONE, "valueCode": zone}]})
    doctor = await post(client, {"resourceType": "Practitioner",
                                 "name": [{"family": "Who", "given": ["Dr"]}]})
    role = {"resourceType": "PractitionerRole",
            "practitioner": {"reference": f"Practitioner/{doctor['id']}"},
            "location": [{"reference": f"Location/{location['id']}"}],
            "availableTime": [
                {"daysOfWeek": WEEKDAYS, "availableStartTime": "09:00:00",
                 "availableEndTime": "12:00:00"},
                {"daysOfWeek": WEEKDAYS, "availableStartTime": "13:00:00",
                 "availableEndTime": "17:00:00"}],
            **(role_extra or {})}
    role = await post(client, role)
    extension: list[dict[str, Any]] = [
        {"url": model.SLOT_LENGTH, "valueDuration": {
            "value": minutes, "unit": "min", "system": "http://unitsofmeasure.org",
            "code": "min"}}]
    if capacity is not None:
        extension.append({"url": model.CAPACITY, "valueInteger": capacity})
    service = [GP, {"coding": [model.VIRTUAL]}] if virtual else [GP]
    schedule = await post(client, {
        "resourceType": "Schedule", "active": True, "extension": extension,
        "serviceType": service,
        "actor": [{"reference": f"PractitionerRole/{role['id']}"}]})
    return {"location": location, "doctor": doctor, "role": role, "schedule": schedule}


async def generate(client: httpx.AsyncClient, schedule_id: str, start: str,
                   end: str) -> dict[str, int]:
    r = await client.post(f"Schedule/{schedule_id}/$generate-slots", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "start", "valueDate": start}, {"name": "end", "valueDate": end}]},
        headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    return {p["name"]: p["valueInteger"] for p in r.json()["parameter"]}


async def slots(client: httpx.AsyncClient, schedule_id: str, **params: str
                ) -> list[dict[str, Any]]:
    r = await client.get("Slot", params={"schedule": f"Schedule/{schedule_id}",
                                         "_sort": "start", "_count": "1000", **params})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])
            if e["resource"]["resourceType"] == "Slot"]


async def patient(client: httpx.AsyncClient, family: str = "Doe") -> str:
    return (await post(client, {"resourceType": "Patient", "name": [{"family": family}]}))["id"]


def booked(slot_id: str, patient_id: str, status: str = "booked") -> dict[str, Any]:
    """A plain Appointment taking `slot_id` for `patient_id`."""
    return {"resourceType": "Appointment", "status": status,
            "slot": [{"reference": f"Slot/{slot_id}"}],
            "participant": [{"actor": {"reference": f"Patient/{patient_id}"},
                             "status": "accepted"}]}
