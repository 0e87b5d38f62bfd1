"""AuditEvents are searched like any resource, only by who may, and never written through
the API: a patient's token sees its own trail and nobody else's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.audit.trail import event_id
from tests.audit.conftest import PATIENT, chain_events, patient_of, token_client, watch


async def two_patients_seen(staff: httpx.AsyncClient) -> None:
    for pid in ("p1", "p2"):
        await staff.put(f"Patient/{pid}", json={**PATIENT, "id": pid})
        await staff.get(f"Patient/{pid}")


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", ())]


async def test_search_by_patient_agent_date_entity_action(
        audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    await two_patients_seen(staff)
    stored = await chain_events(audit_app)
    about_p1 = {e["id"] for e in stored if patient_of(e) == "Patient/p1"}
    assert len(about_p1) == 2  # the update-as-create and the read

    r = await staff.get("AuditEvent", params={"patient": "Patient/p1", "_count": "100"})
    assert set(ids(r.json())) == about_p1
    r = await staff.get("AuditEvent", params={"patient": "Patient/p1", "_sort": "-date"})
    recorded = [e["resource"]["recorded"] for e in r.json()["entry"]]
    assert len(recorded) >= 2 and recorded == sorted(recorded, reverse=True)
    r = await staff.get("AuditEvent", params={"entity": "Patient/p2/_history/1"})
    assert len(ids(r.json())) == 2
    r = await staff.get("AuditEvent", params={"agent": "Practitioner/staff", "_count": "100"})
    assert {event_id(n) for n in range(1, 5)} <= set(ids(r.json()))
    r = await staff.get("AuditEvent", params={"action": "R", "patient": "Patient/p2"})
    [read_p2] = r.json()["entry"]
    assert read_p2["resource"]["subtype"][0]["code"] == "read"
    r = await staff.get("AuditEvent", params={"altid": "staff", "_count": "100"})
    assert len(ids(r.json())) >= 4
    today = datetime.now(UTC).date()
    r = await staff.get("AuditEvent", params={"date": f"ge{today - timedelta(days=1)}",
                                              "_count": "100"})
    assert {event_id(n) for n in range(1, 5)} <= set(ids(r.json()))
    r = await staff.get("AuditEvent", params={"date": f"lt{today - timedelta(days=1)}"})
    assert r.json()["total"] == 0


async def test_a_patient_sees_only_their_own_trail(audit_app: FastAPI,
                                                   staff: httpx.AsyncClient) -> None:
    await two_patients_seen(staff)
    stored = await chain_events(audit_app)
    other = next(e for e in stored if patient_of(e) == "Patient/p2")
    async with await token_client(audit_app, "patient/AuditEvent.rs patient/Patient.rs",
                                  patient="p1", sub="pat1", client_id="portal") as patient:
        r = await patient.get("AuditEvent", params={"_count": "100"})
        assert r.status_code == 200
        seen = r.json()["entry"]
        assert seen and all(patient_of(e["resource"]) == "Patient/p1" for e in seen)
        # asking for another patient's events finds nothing, reading one is a 404
        r = await patient.get("AuditEvent", params={"patient": "Patient/p2"})
        assert r.json().get("total", 0) == 0
        assert (await patient.get(f"AuditEvent/{other['id']}")).status_code == 404
        # the search itself was recorded, in the patient's own trail
        r = await patient.get("AuditEvent", params={"agent:missing": "false",
                                                    "altid": "pat1"})
        assert r.status_code == 200 and r.json()["total"] >= 1


async def test_audit_scope_is_needed(audit_app: FastAPI) -> None:
    async with await token_client(audit_app, "user/Patient.rs",
                                  fhir_user="Practitioner/x") as clerk:
        r = await clerk.get("AuditEvent")
        assert r.status_code == 403


@pytest.mark.parametrize(("method", "path"), [("POST", "AuditEvent"),
                                              ("PUT", "AuditEvent/ae-000000000001"),
                                              ("PATCH", "AuditEvent/ae-000000000001"),
                                              ("DELETE", "AuditEvent/ae-000000000001"),
                                              ("DELETE", "AuditEvent?action=R")])
async def test_append_only(audit_app: FastAPI, staff: httpx.AsyncClient, method: str,
                           path: str) -> None:
    await staff.get("Patient")  # event 1 exists
    before = await chain_events(audit_app)
    event = {**before[0], "action": "D"}
    seen = await watch(audit_app)
    body = (b'[{"op": "replace", "path": "/action", "value": "D"}]' if method == "PATCH"
            else None)
    r = await staff.request(method, path, json=event if method in ("POST", "PUT") else None,
                            content=body, headers={"Content-Type": "application/json-patch+json"}
                            if body else {})
    assert r.status_code == 405, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["allow"] == "GET"
    [refused] = await seen.new()  # the attempt itself is recorded
    assert refused["outcome"] == "4" and "append-only" in refused["outcomeDesc"]
    assert (await chain_events(audit_app))[0] == before[0]


async def test_append_only_inside_a_transaction(audit_app: FastAPI,
                                                staff: httpx.AsyncClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "AuditEvent"},
         "request": {"method": "POST", "url": "AuditEvent"}}]}
    r = await staff.post("", json=bundle)
    assert r.status_code == 405
    assert (await staff.get("Patient")).json()["total"] == 0
