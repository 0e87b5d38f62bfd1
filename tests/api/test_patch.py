"""PATCH: JSON Patch and FHIRPath Patch, over HTTP and inside transactions, plus the
published test cases (FHIR/fhir-test-cases r4/patch) run against the patch engines."""

from __future__ import annotations

import base64
import copy
import json
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest

from fhirpm.errors import FhirError
from fhirpm.fhir import fhirpath_patch, jsonio
from fhirpm.repository.patch import patcher
from tests.conformance.fhirxml import Definitions, to_json
from tests.conftest import FHIR_JSON, shared_path

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
PATIENT = {"resourceType": "Patient", "gender": "male", "birthDate": "1974-12-25",
           "name": [{"family": "Chalmers", "given": ["Peter"]}]}


async def _create(client: httpx.AsyncClient, body: dict[str, Any] = PATIENT) -> str:
    r = await client.post("Patient", json=body, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_json_patch_makes_a_new_version(client: httpx.AsyncClient) -> None:
    pid = await _create(client)
    ops = [{"op": "replace", "path": "/gender", "value": "female"},
           {"op": "add", "path": "/name/0/given/-", "value": "James"}]
    r = await client.patch(f"Patient/{pid}", content=json.dumps(ops), headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gender"] == "female" and body["name"][0]["given"] == ["Peter", "James"]
    assert body["meta"]["versionId"] == "2" and r.headers["etag"] == 'W/"2"'
    history = (await client.get(f"Patient/{pid}/_history")).json()
    assert history["entry"][0]["request"]["method"] == "PATCH"


async def test_json_patch_keeps_decimal_precision(client: httpx.AsyncClient) -> None:
    obs = (b'{"resourceType":"Observation","status":"final","code":{"text":"w"},'
           b'"valueQuantity":{"value":72.50,"unit":"kg"}}')
    oid = (await client.post("Observation", content=obs, headers=FHIR_JSON)).json()["id"]
    ops = b'[{"op":"add","path":"/valueQuantity/code","value":"kg"}]'
    r = await client.patch(f"Observation/{oid}", content=ops, headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    assert b'"value":72.50' in r.content


async def test_if_match_is_honoured(client: httpx.AsyncClient) -> None:
    pid = await _create(client)
    ops = json.dumps([{"op": "replace", "path": "/gender", "value": "other"}])
    stale = await client.patch(f"Patient/{pid}", content=ops,
                               headers={**JSON_PATCH, "If-Match": 'W/"9"'})
    assert stale.status_code == 412
    ok = await client.patch(f"Patient/{pid}", content=ops,
                            headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert ok.status_code == 200


async def test_patch_to_an_invalid_resource_is_refused_with_paths(
        client: httpx.AsyncClient) -> None:
    pid = await _create(client)
    ops = json.dumps([{"op": "add", "path": "/birthDate", "value": "not-a-date"}])
    r = await client.patch(f"Patient/{pid}", content=ops, headers=JSON_PATCH)
    assert r.status_code in (400, 422)
    issue = r.json()["issue"][0]
    assert "Patient.birthDate" in issue["expression"]
    current = (await client.get(f"Patient/{pid}")).json()
    assert current["meta"]["versionId"] == "1" and current["birthDate"] == "1974-12-25"


@pytest.mark.parametrize(("ops", "status"), [
    ([{"op": "replace", "path": "/id", "value": "other"}], 422),
    ([{"op": "replace", "path": "/resourceType", "value": "Person"}], 422),
    ([{"op": "test", "path": "/gender", "value": "female"}], 422),
    ([{"op": "remove", "path": "/nothing/here"}], 422),
    ([{"op": "jump", "path": "/gender"}], 400),
    ({"op": "replace"}, 400),
])
async def test_bad_json_patches(client: httpx.AsyncClient, ops: Any, status: int) -> None:
    pid = await _create(client)
    r = await client.patch(f"Patient/{pid}", content=json.dumps(ops), headers=JSON_PATCH)
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_patch_unknown_gone_and_wrong_media(client: httpx.AsyncClient) -> None:
    ops = json.dumps([{"op": "replace", "path": "/gender", "value": "other"}])
    assert (await client.patch("Patient/nope", content=ops, headers=JSON_PATCH)).status_code \
        == 404
    assert (await client.patch("Nonsense/1", content=ops, headers=JSON_PATCH)).status_code \
        == 404
    pid = await _create(client)
    assert (await client.delete(f"Patient/{pid}")).status_code == 204
    assert (await client.patch(f"Patient/{pid}", content=ops, headers=JSON_PATCH)).status_code \
        == 410
    r = await client.patch(f"Patient/{pid}", content=ops,
                           headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


async def test_fhirpath_patch_over_http(client: httpx.AsyncClient) -> None:
    pid = await _create(client)
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "operation", "part": [
            {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
            {"name": "name", "valueString": "identifier"},
            {"name": "value", "valueIdentifier": {"system": "urn:s", "value": "1"}}]},
        {"name": "operation", "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.name.where(family = 'Chalmers').family"},
            {"name": "value", "valueString": "Windsor"}]}]}
    r = await client.patch(f"Patient/{pid}", json=params, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["identifier"] == [{"system": "urn:s", "value": "1"}]
    assert body["name"][0]["family"] == "Windsor"


async def test_fhirpath_patch_unsupported_expression_is_400(client: httpx.AsyncClient) -> None:
    pid = await _create(client)
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "delete"},
        {"name": "path", "valueString": "Patient.name.select(family)"}]}]}
    r = await client.patch(f"Patient/{pid}", json=params, headers=FHIR_JSON)
    assert r.status_code == 400
    assert "select" in r.json()["issue"][0]["diagnostics"]


async def test_patch_entries_in_a_transaction(client: httpx.AsyncClient) -> None:
    pid = await _create(client)
    ops = json.dumps([{"op": "replace", "path": "/gender", "value": "female"}]).encode()
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(ops).decode()}
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"},
        {"name": "value", "valueDate": "1975-01-01"}]}]}
    other = await _create(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
        {"resource": params, "request": {"method": "PATCH", "url": f"Patient/{other}"}}]}
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["200 OK", "200 OK"]
    assert (await client.get(f"Patient/{pid}")).json()["gender"] == "female"
    assert (await client.get(f"Patient/{other}")).json()["birthDate"] == "1975-01-01"


# -- the published test cases -----------------------------------------------------------


def _json_patch_cases() -> list[Any]:
    path = shared_path("fhir", "test-cases", "r4", "patch", "json-patch-tests.json")
    return jsonio.loads(path.read_bytes())


def test_published_json_patch_cases() -> None:
    cases = _json_patch_cases()
    assert len(cases) == 16
    for case in cases:
        doc = copy.deepcopy(case["doc"])
        if "error" in case:
            with pytest.raises(FhirError) as caught:
                patcher(case["patch"])(doc)
            assert caught.value.status in (400, 422), case["comment"]
        else:
            assert patcher(case["patch"])(doc) == case["expected"], case["comment"]


def first_child(element: ET.Element | None) -> ET.Element:
    assert element is not None
    return next(c for c in element if isinstance(c.tag, str))


def _normalised(resource: dict[str, Any]) -> bytes:
    """Canonical JSON; narrative XHTML compared as canonical XML (whitespace-insensitive)."""
    resource = copy.deepcopy(resource)
    div = resource.get("text", {}).get("div")
    if div is not None:
        resource["text"]["div"] = ET.canonicalize(div, strip_text=True)
    return jsonio.dumps(resource, sort_keys=True)


def test_published_fhirpath_patch_cases() -> None:
    source = shared_path("fhir", "test-cases", "r4", "patch", "fhir-patch-tests.xml")
    definitions = Definitions(shared_path("fhir", "definitions", "hl7.fhir.r4.core"))
    cases = ET.parse(source).getroot().findall("case")
    assert len(cases) == 33
    for case in cases:
        name = case.get("name")
        resource = to_json(first_child(case.find("input")), definitions)
        patch = to_json(first_child(case.find("diff")), definitions)
        error = case.find("error")
        if error is not None:
            with pytest.raises(FhirError) as caught:
                fhirpath_patch.apply(resource, patch)
            assert caught.value.diagnostics == error.get("msg"), name
            continue
        expected = to_json(first_child(case.find("output")), definitions)
        assert _normalised(fhirpath_patch.apply(resource, patch)) == _normalised(expected), name


def test_deeply_nested_patch_input_is_400_not_500() -> None:
    nested = "Patient.where(" + "(" * 3000 + "use = 'x'" + ")" * 3000 + ")"
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": nested}]}]}
    with pytest.raises(FhirError) as caught:
        fhirpath_patch.apply({"resourceType": "Patient"}, params)
    assert caught.value.status == 400
    value: dict[str, Any] = {"name": "value"}
    inner = value
    for _ in range(3000):
        inner["part"] = [{"name": "x"}]
        inner = inner["part"][0]
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "contact"}, value]}]}
    with pytest.raises(FhirError) as caught:
        fhirpath_patch.apply({"resourceType": "Patient"}, params)
    assert caught.value.status == 400
