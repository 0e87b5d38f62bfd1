"""Each FHIR interaction over HTTP leaves exactly the expected AuditEvents in the store."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.audit.conftest import (
    PATIENT,
    client_of,
    data_refs,
    patient_of,
    query_of,
    subtype,
    user_of,
    watch,
)
from tests.bearer import STAFF_USER


def observation(patient: str, code: str = "8867-4") -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}}


async def setup(staff: httpx.AsyncClient) -> None:
    for pid in ("p1", "p2"):
        assert (await staff.put(f"Patient/{pid}", json={**PATIENT, "id": pid})).status_code \
            == 201
    for pid in ("p1", "p2"):
        assert (await staff.put(f"Observation/o-{pid}",
                                json={**observation(pid), "id": f"o-{pid}"})).status_code == 201


def assert_staff(event: dict) -> None:
    assert user_of(event) == (STAFF_USER, "staff")
    assert client_of(event) == "fhirpm-tests"
    assert event["source"]["observer"]["identifier"]["value"] == "http://testserver/fhir"
    assert event["outcome"] == "0"


async def test_create_update_patch_delete(audit_app: FastAPI,
                                          staff: httpx.AsyncClient) -> None:
    seen = await watch(audit_app)
    r = await staff.post("Patient", json=PATIENT)
    pid = r.json()["id"]
    [created] = await seen.new()
    assert (subtype(created), created["action"]) == ("create", "C")
    assert data_refs(created) == [f"Patient/{pid}/_history/1"]
    assert patient_of(created) == f"Patient/{pid}"
    assert_staff(created)

    r = await staff.post("Observation", json=observation(pid))
    oid = r.json()["id"]
    [obs] = await seen.new()
    assert data_refs(obs) == [f"Observation/{oid}/_history/1"]
    assert patient_of(obs) == f"Patient/{pid}"

    await staff.put(f"Observation/{oid}", json={**observation(pid, "1234-5"), "id": oid})
    await staff.patch(f"Observation/{oid}", content=b'[{"op": "replace", "path": "/status",'
                      b' "value": "amended"}]',
                      headers={"Content-Type": "application/json-patch+json"})
    assert (await staff.delete(f"Observation/{oid}")).status_code == 204
    updated, patched, deleted = await seen.new()
    assert (subtype(updated), updated["action"]) == ("update", "U")
    assert (subtype(patched), patched["action"]) == ("patch", "U")
    assert (subtype(deleted), deleted["action"]) == ("delete", "D")
    assert data_refs(deleted) == [f"Observation/{oid}/_history/4"]
    for event in (updated, patched, deleted):  # a deletion names what it deleted's patient
        assert patient_of(event) == f"Patient/{pid}"
        assert_staff(event)


async def test_reads_and_vread(audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    await setup(staff)
    seen = await watch(audit_app)
    assert (await staff.get("Observation/o-p1")).status_code == 200
    assert (await staff.get("Observation/o-p1/_history/1")).status_code == 200
    read, vread = await seen.new()
    assert (subtype(read), read["action"], subtype(vread)) == ("read", "R", "vread")
    assert data_refs(read) == ["Observation/o-p1/_history/1"]
    assert patient_of(read) == patient_of(vread) == "Patient/p1"
    assert_staff(read)


async def test_search_one_event_per_patient_with_the_query(audit_app: FastAPI,
                                                          staff: httpx.AsyncClient) -> None:
    await setup(staff)
    seen = await watch(audit_app)
    r = await staff.get("Observation", params={"code": "http://loinc.org|8867-4"})
    assert r.json()["total"] == 2
    events = await seen.new()
    assert len(events) == 2
    assert {patient_of(e) for e in events} == {"Patient/p1", "Patient/p2"}
    for event in events:
        assert (subtype(event), event["action"]) == ("search-type", "E")
        assert query_of(event) == "Observation?code=http%3A%2F%2Floinc.org%7C8867-4"
        assert data_refs(event) == []  # BALP Query: the query and the patients, not rows

    await staff.get("Observation", params={"code": "nothing-matches"})
    [empty] = await seen.new()
    assert patient_of(empty) is None and query_of(empty) == "Observation?code=nothing-matches"

    await staff.post("Observation/_search", content=b"subject=Patient/p2",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    [posted] = await seen.new()
    assert query_of(posted) == "Observation/_search?subject=Patient/p2"
    assert patient_of(posted) == "Patient/p2"


async def test_history_and_operation(audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    await setup(staff)
    seen = await watch(audit_app)
    await staff.get("Patient/p1/_history")
    [history] = await seen.new()
    assert (subtype(history), history["action"]) == ("history-instance", "R")
    assert patient_of(history) == "Patient/p1"
    r = await staff.post("Patient/$validate", json={**PATIENT, "id": "x"})
    assert r.status_code == 200
    [operation] = await seen.new()
    assert (subtype(operation), operation["action"]) == ("operation", "E")
    assert query_of(operation) == "Patient/$validate"


async def test_transaction_entries_each_recorded(audit_app: FastAPI,
                                                 staff: httpx.AsyncClient) -> None:
    seen = await watch(audit_app)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:a", "resource": PATIENT,
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("t1") | {"subject": {"reference": "urn:uuid:a"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    r = await staff.post("", json=bundle)
    assert r.status_code == 200, r.text
    events = await seen.new()
    kinds = [subtype(e) for e in events]
    assert kinds == ["create", "create", "transaction"]
    patient_ref = patient_of(events[0])
    assert patient_ref is not None and patient_of(events[1]) == patient_ref
    assert all(user_of(e) == (STAFF_USER, "staff") for e in events)


async def test_batch_reads_and_failures(audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    await setup(staff)
    seen = await watch(audit_app)
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}}]}
    r = await staff.post("", json=bundle)
    assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["200", "404"]
    events = await seen.new()
    assert sorted((subtype(e), e["outcome"]) for e in events) == [
        ("batch", "0"), ("read", "0"), ("read", "4")]
    missing = next(e for e in events if e["outcome"] == "4")
    assert "Patient/nobody" in missing["outcomeDesc"]
    assert patient_of(missing) == "Patient/nobody"


async def test_failed_write_is_recorded_although_rolled_back(
        audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    seen = await watch(audit_app)
    r = await staff.post("Patient", json={"resourceType": "Patient", "birthDate": "nope"})
    assert r.status_code == 400
    [failed] = await seen.new()
    assert (subtype(failed), failed["outcome"]) == ("create", "4")
    assert "birthDate" in failed["outcomeDesc"]
    assert (await staff.get("Patient")).json()["total"] == 0


async def test_refused_access_is_recorded(audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    from tests.audit.conftest import token_client

    await setup(staff)
    seen = await watch(audit_app)
    async with await token_client(audit_app, "patient/Observation.rs", patient="p1",
                                  sub="pat", client_id="portal") as patient:
        assert (await patient.get("Observation/o-p2")).status_code == 404
        assert (await patient.get("Patient/p1")).status_code == 403
    hidden, refused = await seen.new()
    assert (subtype(hidden), hidden["outcome"], client_of(hidden)) == ("read", "4", "portal")
    assert (refused["outcome"], patient_of(refused)) == ("4", "Patient/p1")
    assert user_of(refused) == (None, "pat")
