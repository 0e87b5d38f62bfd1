"""`_summary` and `_elements` on read and vread (and `shape` itself, which search reuses)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhirpm.errors import FhirError
from fhirpm.fhir import jsonio
from fhirpm.fhir.shaping import requested, shape
from tests.conftest import FHIR_JSON

PATIENT = {
    "resourceType": "Patient",
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">P</div>"},
    "identifier": [{"system": "urn:mrn", "value": "42"}],
    "name": [{"family": "Chalmers"}], "gender": "male", "birthDate": "1974-12-25",
    "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/"
                                         "patient-birthTime",
                                  "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
    "maritalStatus": {"text": "married"},
    "contact": [{"name": {"family": "du Marché"}}],
}
OBSERVATION = (b'{"resourceType":"Observation","status":"final","code":{"text":"weight"},'
               b'"effectiveDateTime":"2024-01-02","valueQuantity":{"value":72.50,"unit":"kg"},'
               b'"note":[{"text":"after lunch"}]}')
SUBSETTED = "SUBSETTED"


async def _read(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    r = await client.get(url)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
async def pid(client: httpx.AsyncClient) -> str:
    r = await client.post("Patient", json=PATIENT, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _tags(resource: dict[str, Any]) -> list[str]:
    return [t["code"] for t in resource["meta"].get("tag", [])]


async def test_summary_true_keeps_summary_elements(client: httpx.AsyncClient, pid: str) -> None:
    body = await _read(client, f"Patient/{pid}?_summary=true")
    assert set(body) == {"resourceType", "id", "meta", "identifier", "name", "gender",
                         "birthDate", "_birthDate"}
    assert SUBSETTED in _tags(body) and body["meta"]["versionId"] == "1"


async def test_summary_text_and_data(client: httpx.AsyncClient, pid: str) -> None:
    text = await _read(client, f"Patient/{pid}?_summary=text")
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data = await _read(client, f"Patient/{pid}?_summary=data")
    assert "text" not in data and data["contact"] == PATIENT["contact"]
    assert SUBSETTED in _tags(data)


async def test_summary_false_serves_the_stored_bytes(client: httpx.AsyncClient,
                                                      pid: str) -> None:
    plain = await client.get(f"Patient/{pid}")
    full = await client.get(f"Patient/{pid}?_summary=false")
    assert full.content == plain.content


async def test_elements_keeps_asked_and_mandatory(client: httpx.AsyncClient) -> None:
    oid = (await client.post("Observation", content=OBSERVATION,
                             headers=FHIR_JSON)).json()["id"]
    r = await client.get(f"Observation/{oid}?_elements=value,effective")
    body = r.json()
    # status and code are mandatory (min 1): kept though not asked for
    assert set(body) == {"resourceType", "id", "meta", "status", "code", "effectiveDateTime",
                         "valueQuantity"}
    assert b'"value":72.50' in r.content  # decimals survive the re-serialisation
    both = (await client.get(f"Observation/{oid}?_elements=note&_elements=Observation.issued"))
    assert set(both.json()) == {"resourceType", "id", "meta", "status", "code", "note"}


async def test_vread_is_shaped_too(client: httpx.AsyncClient, pid: str) -> None:
    body = await _read(client, f"Patient/{pid}/_history/1?_elements=gender")
    assert set(body) == {"resourceType", "id", "meta", "gender"}
    assert SUBSETTED in _tags(body)


@pytest.mark.parametrize("query", ["_summary=bogus", "_summary=count",
                                   "_summary=true&_elements=name",
                                   "_summary=true&_summary=false"])
async def test_bad_shaping_requests_are_400(client: httpx.AsyncClient, pid: str,
                                            query: str) -> None:
    r = await client.get(f"Patient/{pid}?{query}")
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_shape_is_a_noop_without_a_request() -> None:
    body = jsonio.dumps(PATIENT)
    assert shape(body, None, None, "Patient") is body
    assert shape(body, "false", None, "Patient") is body


def test_choice_names_are_not_confused_with_longer_names() -> None:
    request = {"resourceType": "MedicationRequest", "status": "active",
               "statusReason": {"text": "x"}, "intent": "order",
               "medicationCodeableConcept": {"text": "m"}, "subject": {"reference": "P/1"}}
    out = jsonio.loads(shape(jsonio.dumps(request), None, ["medication"], ""))
    assert "medicationCodeableConcept" in out and "statusReason" not in out


def test_requested_parses_and_refuses() -> None:
    assert requested([("_elements", "a, b"), ("_elements", "c")]) == (None, ["a", "b", "c"])
    assert requested([("_summary", "data")]) == ("data", None)
    with pytest.raises(FhirError):
        requested([("_summary", "nope")])
