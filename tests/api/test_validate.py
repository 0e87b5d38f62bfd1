"""$validate at type and instance level: 200 with an OperationOutcome, never a write."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON

PATIENT = {"resourceType": "Patient", "gender": "male", "birthDate": "1974-12-25"}
BAD = {"resourceType": "Patient", "gender": "male", "birthDate": "25/12/1974"}


def _severities(outcome: dict[str, Any]) -> set[str]:
    return {i["severity"] for i in outcome["issue"]}


async def _patients(client: httpx.AsyncClient) -> int:
    return (await client.get("Patient/_history")).json()["total"]


async def test_valid_resource(client: httpx.AsyncClient) -> None:
    r = await client.post("Patient/$validate", json=PATIENT, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert _severities(outcome) == {"information"}
    assert await _patients(client) == 0


async def test_invalid_resource_reports_paths_and_stores_nothing(
        client: httpx.AsyncClient) -> None:
    r = await client.post("Patient/$validate", json=BAD, headers=FHIR_JSON)
    assert r.status_code == 200
    errors = [i for i in r.json()["issue"] if i["severity"] == "error"]
    assert errors and errors[0]["expression"] == ["Patient.birthDate"]
    assert await _patients(client) == 0


async def test_parameters_input_with_mode(client: httpx.AsyncClient) -> None:
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": BAD}, {"name": "mode", "valueCode": "create"}]}
    r = await client.post("Patient/$validate", json=params, headers=FHIR_JSON)
    assert r.status_code == 200
    assert "error" in _severities(r.json())
    update = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": PATIENT}, {"name": "mode", "valueCode": "update"}]}
    r = await client.post("Patient/$validate", json=update, headers=FHIR_JSON)
    assert r.json()["issue"][0]["expression"] == ["Patient.id"]  # an update needs the id
    bad_mode = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": PATIENT}, {"name": "mode", "valueCode": "upsert"}]}
    assert (await client.post("Patient/$validate", json=bad_mode,
                              headers=FHIR_JSON)).status_code == 400


async def test_instance_level(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=PATIENT, headers=FHIR_JSON)).json()["id"]
    stored = await client.get(f"Patient/{pid}/$validate")
    assert stored.status_code == 200 and _severities(stored.json()) == {"information"}
    wrong_id = await client.post(f"Patient/{pid}/$validate", json={**PATIENT, "id": "other"},
                                 headers=FHIR_JSON)
    assert wrong_id.json()["issue"][0]["expression"] == ["Patient.id"]
    changed = await client.post(f"Patient/{pid}/$validate", json={**BAD, "id": pid},
                                headers=FHIR_JSON)
    assert "error" in _severities(changed.json())
    assert (await client.get(f"Patient/{pid}")).json()["birthDate"] == "1974-12-25"
    deletable = await client.post(f"Patient/{pid}/$validate?mode=delete", headers=FHIR_JSON)
    assert deletable.status_code == 200, deletable.text
    assert (await client.get("Patient/missing/$validate")).status_code == 404


@pytest.mark.parametrize(("method", "url", "body", "status"), [
    ("POST", "Observation/$validate", PATIENT, 400),  # body type differs from the URL
    ("POST", "$validate", PATIENT, 400),  # no system level
    ("POST", "Patient/$nonesuch", PATIENT, 400),
    ("POST", "Nonsense/$validate", PATIENT, 404),
    ("POST", "Patient/$validate", None, 400),
])
async def test_bad_requests(client: httpx.AsyncClient, method: str, url: str,
                            body: Any, status: int) -> None:
    r = await client.request(method, url, json=body, headers=FHIR_JSON)
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post("Patient/$validate", content=b"{nope", headers=FHIR_JSON)
    assert r.status_code == 400
