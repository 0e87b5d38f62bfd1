"""`fhirpm serve` over a real socket: startup output, create and read, graceful shutdown."""

from __future__ import annotations

import os
import signal

import httpx

from bench.server import ServerProcess

PATIENT = (b'{"resourceType":"Patient","name":[{"family":"Chalmers"}],'
           b'"extension":[{"url":"http://example.org/weight","valueDecimal":72.50}]}')
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def test_create_then_read_over_http(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url + "/fhir/", headers=FHIR_JSON) as anonymous:
        refused = anonymous.get("Patient/does-not-exist")
        assert refused.status_code == 401  # authorization is on, as deployed
        assert refused.headers["www-authenticate"].startswith("Bearer")
    with httpx.Client(base_url=server.base_url + "/fhir/",
                      headers={**FHIR_JSON, **server.auth_headers}) as client:
        created = client.post("Patient", content=PATIENT)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        assert location.startswith(f"{server.base_url}/fhir/Patient/")
        read = client.get(location.removeprefix(server.base_url + "/fhir/"))
        assert read.status_code == 200
        assert read.content == created.content
        assert b'"valueDecimal":72.50' in read.content
        assert read.headers["etag"] == 'W/"1"'
        missing = client.get("Patient/does-not-exist")
        assert missing.status_code == 404
        assert missing.json()["resourceType"] == "OperationOutcome"


def test_serve_announces_base_url_and_data_and_stops_cleanly(
        server: ServerProcess, store_url: str) -> None:
    db_path = store_url.removeprefix("sqlite:///")
    assert f"{server.base_url}/fhir" in server.log()
    assert db_path in server.log()
    # SIGTERM: uvicorn runs the lifespan shutdown (re-raising the signal afterwards); the
    # store's last connection closing checkpoints the WAL and removes it
    assert server.stop() in (0, -signal.SIGTERM)
    assert not os.path.exists(db_path + "-wal"), server.log()
