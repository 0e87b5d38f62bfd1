"""The waitlist over HTTP: waitlisted Appointments are searchable, take no Slot, and
`Slot/[id]/$waitlist` lists who fits a freed Slot, first come first served (staff only)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from fhirpm.scheduling import model
from tests.bearer import bearer, mint
from tests.conftest import FHIR_JSON

GP = {"system": "http://terminology.hl7.org/CodeSystem/service-type", "code": "124"}
DENTAL = {"system": "http://terminology.hl7.org/CodeSystem/service-type", "code": "7"}


async def _post(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(resource["resourceType"], json=resource, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()


def _waiting(patient: str, created: str, *actors: str, service: list[dict[str, str]],
             period: dict[str, str] | None = None) -> dict[str, Any]:
    appt: dict[str, Any] = {
        "resourceType": "Appointment", "status": "waitlist", "created": created,
        "serviceType": [{"coding": service}],
        "participant": [{"actor": {"reference": ref}, "status": "needs-action"}
                        for ref in (f"Patient/{patient}", *actors)]}
    if period:
        appt["requestedPeriod"] = [period]
    return appt


async def test_who_fits_a_freed_slot(client: httpx.AsyncClient, app: FastAPI) -> None:
    doctor = await _post(client, {"resourceType": "Practitioner"})
    other = await _post(client, {"resourceType": "Practitioner"})
    ann, bob = [(await _post(client, {"resourceType": "Patient"}))["id"] for _ in "ab"]
    schedule = await _post(client, {
        "resourceType": "Schedule", "serviceType": [{"coding": [GP, model.IN_PERSON]}],
        "actor": [{"reference": f"Practitioner/{doctor['id']}"}]})
    slot = await _post(client, {
        "resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule['id']}"},
        "status": "free", "start": "2030-05-06T09:00:00Z", "end": "2030-05-06T09:30:00Z"})
    me = f"Practitioner/{doctor['id']}"
    fits_late = await _post(client, _waiting(ann, "2030-04-02", me, service=[GP]))
    fits_early = await _post(client, _waiting(
        bob, "2030-04-01", service=[GP, model.IN_PERSON],
        period={"start": "2030-05-01", "end": "2030-05-31"}))
    for misfit in (
            _waiting(ann, "2030-03-01", f"Practitioner/{other['id']}", service=[GP]),
            _waiting(ann, "2030-03-01", service=[DENTAL]),
            _waiting(ann, "2030-03-01", service=[GP, model.VIRTUAL]),
            _waiting(ann, "2030-03-01", service=[GP],
                     period={"start": "2030-06-01T00:00:00Z"})):
        await _post(client, misfit)

    # the waitlist is a plain search ...
    r = await client.get("Appointment", params={"status": "waitlist", "service-type": "124"})
    assert r.json()["total"] == 5  # all but the dental one
    # ... and the fits for this slot come first come first served
    r = await client.get(f"Slot/{slot['id']}/$waitlist")
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "searchset"
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [fits_early["id"],
                                                                fits_late["id"]]

    # offering the slot is an update to booked: it takes the Slot and leaves the list
    offer = {**fits_early, "status": "booked", "start": slot["start"], "end": slot["end"],
             "slot": [{"reference": f"Slot/{slot['id']}"}]}
    r = await client.put(f"Appointment/{offer['id']}", json=offer, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert (await client.get(f"Slot/{slot['id']}")).json()["status"] == "busy"
    r = await client.get(f"Slot/{slot['id']}/$waitlist")
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [fits_late["id"]]

    # other patients' appointments: not for patient tokens
    token = await mint(app.state.auth, "patient/*.rs", patient=ann)
    r = await client.get(f"Slot/{slot['id']}/$waitlist", headers=bearer(token))
    assert r.status_code == 403
    assert (await client.get("Slot/nope/$waitlist")).status_code == 404
