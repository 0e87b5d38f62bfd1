"""A real `fhirpm serve` process with a `mongodb://` store URL, over HTTP on loopback: the
REST interactions, a transaction bundle and search, end to end through uvicorn, PyMongo and
the MongoDB wire protocol (a real server when FHIRPM_TEST_MONGODB_URL is set, else the
emulator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.server import ServerProcess

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@pytest.fixture
def server(mongo_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess.fhirpm(mongo_url, tmp_path / "server.log") as running:
        yield running


def test_rest_on_a_mongodb_store(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url + "/fhir/", headers=FHIR_JSON,
                      timeout=30) as c:
        assert c.get("metadata").status_code == 200
        assert httpx.get(server.base_url + "/readyz").status_code == 200
        body = (b'{"resourceType":"Patient","name":[{"family":"Ng\xc3\xa9"}],'
                b'"identifier":[{"system":"urn:mrn","value":"42"}],"birthDate":"1970-01-01",'
                b'"extension":[{"url":"http://example.org/w","valueDecimal":72.50}]}')
        created = c.post("Patient", content=body)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        read = c.get(f"Patient/{pid}")
        assert read.status_code == 200 and read.content == created.content
        assert b'"valueDecimal":72.50' in read.content
        new_patient = "urn:uuid:0b5d6a3e-1111-4c1e-9a59-2f0bcbd6e001"
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": new_patient,
             "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final",
                          "code": {"text": "weight"},
                          "subject": {"reference": new_patient}},
             "request": {"method": "POST", "url": "Observation"}}]}
        done = c.post("", json=bundle)
        assert done.status_code == 200, done.text
        assert [e["response"]["status"][:3] for e in done.json()["entry"]] == ["201", "201"]
        found = c.get("Observation", params={"subject:Patient.name": "tx"})
        assert found.status_code == 200 and found.json()["total"] == 1
        by_identifier = c.get("Patient", params={"identifier": "urn:mrn|42"}).json()
        assert [e["resource"]["id"] for e in by_identifier["entry"]] == [pid]
        assert c.delete(f"Patient/{pid}").status_code == 204
        assert c.get(f"Patient/{pid}").status_code == 410
        history = c.get(f"Patient/{pid}/_history").json()
        assert history["total"] == 2
