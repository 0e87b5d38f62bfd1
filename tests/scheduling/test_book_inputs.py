"""Malformed input to the booking operations: always an OperationOutcome with a 4xx,
never a 500, and nothing stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON
from tests.scheduling.booking_world import generate, practice, slots

DAY = "2026-12-07"


def _wrap(appointment: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [{"name": "appointment", "resource": appointment}]}


def _with_slot(value: Any, slot_id: str) -> Any:
    """`value` with the placeholder Slot/S0 replaced by a real slot."""
    if isinstance(value, str):
        return value.replace("Slot/S0", f"Slot/{slot_id}")
    if isinstance(value, dict):
        return {k: _with_slot(v, slot_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_slot(v, slot_id) for v in value]
    return value


BAD_APPOINTMENTS: list[Any] = [
    {"resourceType": "Appointment", "status": "proposed", "slot": "Slot/x",
     "participant": [{"actor": {"reference": "Patient/p"}, "status": "needs-action"}]},
    {"resourceType": "Appointment", "status": "proposed", "slot": [{"reference": 7}],
     "participant": [{"actor": {"reference": "Patient/p"}, "status": "needs-action"}]},
    {"resourceType": "Appointment", "status": "proposed", "slot": [{"reference": "SLOT"}],
     "participant": {"actor": "Patient/p"}},
    {"resourceType": "Appointment", "slot": [{"reference": "Slot/S0"}],
     "participant": [{"actor": "Patient/p"}]},
    {"resourceType": "Appointment", "slot": [{"reference": "Slot/S0"}],
     "participant": "nobody"},
    {"resourceType": "Appointment", "slot": [{"reference": "Slot/S0"}],
     "participant": [{"actor": {"reference": "Patient/p"}, "status": "needs-action"}],
     "extension": "x", "meta": {"tag": "hold"}},
    {"resourceType": "Patient"},
    ["not", "a", "resource"],
    "Appointment",
]


@pytest.mark.parametrize("operation", ["$hold", "$book"])
async def test_bad_appointments_are_4xx(client: httpx.AsyncClient, operation: str) -> None:
    world = await practice(client)
    await generate(client, world["schedule"]["id"], DAY, DAY)
    first = (await slots(client, world["schedule"]["id"]))[0]["id"]
    for bad in BAD_APPOINTMENTS:
        real = _with_slot(bad, first)
        for payload in (_wrap(real), real):
            r = await client.post(f"Appointment/{operation}", json=payload,
                                  headers=FHIR_JSON)
            assert 400 <= r.status_code < 500, (bad, r.status_code, r.text)
            assert r.json()["resourceType"] == "OperationOutcome", r.text
    r = await client.post(f"Appointment/{operation}", content=b"{not json",
                          headers=FHIR_JSON)
    assert r.status_code == 400
    assert (await client.get("Appointment")).json().get("entry") is None
    slot = (await client.get(f"Slot/{first}")).json()
    assert slot["status"] == "free" and slot["meta"]["versionId"] == "1"


async def test_bad_parameters_are_4xx(client: httpx.AsyncClient) -> None:
    cases = [
        ("Appointment/$book", {"resourceType": "Parameters", "parameter": [{"value": 1}]}),
        ("Appointment/$book", {"resourceType": "Parameters", "parameter": "x"}),
        ("Appointment/$book", {"resourceType": "Parameters", "parameter": [
            {"name": "overbook", "valueString": "maybe"}]}),
        ("Appointment/$find", {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueInteger": 3}]}),
        ("Appointment/$find", {"resourceType": "Parameters", "parameter": [
            {"name": "practitioner", "valueBoolean": True}]}),
        ("Appointment/$find", {"resourceType": "Parameters", "parameter": [
            {"name": "start", "valueString": "2026-12-07"},
            {"name": "start", "valueString": "2026-12-08"}]}),
        ("Appointment/x/$reschedule", {"resourceType": "Parameters"}),
        ("Appointment/x/$cancel", {"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueInteger": 1}]}),
        ("Schedule/x/$generate-slots", {"resourceType": "Parameters", "parameter": [
            {"name": "start", "valueDate": "2026-02-30"}]}),
    ]
    for path, body in cases:
        r = await client.post(path, json=body, headers=FHIR_JSON)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
