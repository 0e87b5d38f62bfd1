"""The visit on the HL7 v2 path: SIU messages move the Appointment (filler status
Started -> checked-in, Complete -> fulfilled) and the visit rule moves its Encounter in
the same transaction the bridge commits, exactly as a REST write would."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from fhirpm.config import Hl7Settings
from fhirpm.fhir import jsonio
from fhirpm.hl7v2.inbound import Inbound
from fhirpm.repository.conditional import find_matches
from fhirpm.scheduling import visit
from tests.conftest import BASE
from tests.hl7v2.samples import siu


async def test_siu_check_in_and_out(app: FastAPI) -> None:
    ix = app.state.interactions
    inbound = Inbound(ix, Hl7Settings(port=0), BASE)  # on the app's interactions and rules

    async def appointment() -> dict[str, Any]:
        (found,) = await find_matches(ix, "Appointment", "identifier=APT1", None)
        return jsonio.loads(found.body)

    async def encounter(appointment_id: str) -> dict[str, Any] | None:
        found = await ix.repo.store.read("Encounter", visit.encounter_id(appointment_id))
        return jsonio.loads(found.body) if found is not None else None

    booked = await inbound.receive(siu("S12", "V1").encode())
    assert booked.message.status == "processed", booked.message.error
    appt = await appointment()
    assert appt["status"] == "booked" and await encounter(appt["id"]) is None

    await inbound.receive(siu("S14", "V2", status="Started").encode())
    appt = await appointment()
    enc = await encounter(appt["id"])
    assert appt["status"] == "checked-in"
    assert enc is not None and enc["status"] == "in-progress"
    assert enc["subject"] == next(p["actor"] for p in appt["participant"]
                                  if p["actor"].get("reference", "").startswith("Patient/"))

    await inbound.receive(siu("S14", "V3", status="Complete").encode())
    enc = await encounter(appt["id"])
    assert (await appointment())["status"] == "fulfilled"
    assert enc["status"] == "finished" and "end" in enc["period"]
