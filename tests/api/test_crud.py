"""Create, read, update, delete and versioning over HTTP (ASGI transport)."""

from __future__ import annotations

import httpx

from tests.conftest import FHIR_JSON

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}],
           "gender": "male", "birthDate": "1974-12-25"}


async def test_create_assigns_id_version_and_headers(client: httpx.AsyncClient) -> None:
    r = await client.post("Patient", json=PATIENT, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert "last-modified" in r.headers
    assert r.headers["content-type"].startswith("application/fhir+json")


async def test_read_serves_the_stored_bytes(client: httpx.AsyncClient) -> None:
    created = await client.post("Patient", json=PATIENT, headers=FHIR_JSON)
    r = await client.get(f"Patient/{created.json()['id']}")
    assert r.status_code == 200
    assert r.content == created.content


async def test_decimal_precision_is_kept(client: httpx.AsyncClient) -> None:
    body = (b'{"resourceType":"Observation","status":"final","code":{"text":"weight"},'
            b'"valueQuantity":{"value":72.50,"unit":"kg"}}')
    r = await client.post("Observation", content=body, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    read = await client.get(f"Observation/{r.json()['id']}")
    assert b'"value":72.50' in read.content


async def test_update_increments_version_and_identical_update_keeps_it(
        client: httpx.AsyncClient) -> None:
    created = (await client.post("Patient", json=PATIENT, headers=FHIR_JSON)).json()
    pid = created["id"]
    changed = {**PATIENT, "id": pid, "gender": "female"}
    r = await client.put(f"Patient/{pid}", json=changed, headers=FHIR_JSON)
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    again = await client.put(f"Patient/{pid}", json=changed, headers=FHIR_JSON)
    assert again.status_code == 200 and again.json()["meta"]["versionId"] == "2"


async def test_update_as_create_with_client_id(client: httpx.AsyncClient) -> None:
    r = await client.put("Patient/pat-1", json={**PATIENT, "id": "pat-1"}, headers=FHIR_JSON)
    assert r.status_code == 201
    assert r.json()["id"] == "pat-1"


async def test_if_match_mismatch_is_412(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=PATIENT, headers=FHIR_JSON)).json()["id"]
    r = await client.put(f"Patient/{pid}", json={**PATIENT, "id": pid, "gender": "other"},
                         headers={**FHIR_JSON, "If-Match": 'W/"7"'})
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    ok = await client.put(f"Patient/{pid}", json={**PATIENT, "id": pid, "gender": "other"},
                          headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200


async def test_delete_then_gone_and_history_keeps_it(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=PATIENT, headers=FHIR_JSON)).json()["id"]
    assert (await client.delete(f"Patient/{pid}")).status_code == 204
    gone = await client.get(f"Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    history = (await client.get(f"Patient/{pid}/_history")).json()
    assert history["type"] == "history" and history["total"] == 2
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in history["entry"][0]
    old = await client.get(f"Patient/{pid}/_history/1")
    assert old.status_code == 200 and old.json()["gender"] == "male"


async def test_conditional_read_headers(client: httpx.AsyncClient) -> None:
    created = await client.post("Patient", json=PATIENT, headers=FHIR_JSON)
    pid = created.json()["id"]
    r = await client.get(f"Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304
    r = await client.get(f"Patient/{pid}",
                         headers={"If-Modified-Since": created.headers["last-modified"]})
    assert r.status_code == 304
    r = await client.get(f"Patient/{pid}", headers={"If-None-Match": 'W/"0"'})
    assert r.status_code == 200
