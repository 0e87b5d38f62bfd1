"""GET [base]/metadata: a CapabilityStatement generated from what is registered."""

from __future__ import annotations

from typing import Any

import fhirkit
import httpx
from fastapi import FastAPI

from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository.interactions import FhirResponse
from fhirpm.search.registry import Registry

TYPE_LEVEL = {"read", "vread", "update", "patch", "delete", "history-instance",
              "history-type", "create"}


async def _statement(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("metadata")
    assert r.status_code == 200, r.text
    return r.json()


def _resource(statement: dict[str, Any], type: str) -> dict[str, Any]:
    return next(r for r in statement["rest"][0]["resource"] if r["type"] == type)


async def test_statement_describes_this_server(client: httpx.AsyncClient, app: FastAPI) -> None:
    r = await client.get("metadata")
    statement = r.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    assert statement["software"]["name"] == "fhirpm"
    assert statement["implementation"]["url"] == app.state.settings.fhir_base
    assert "application/fhir+json" in statement["format"]
    assert "application/json-patch+json" in statement["patchFormat"]
    assert fhirkit.validate(r.content) == []  # the statement is itself valid R4


async def test_every_type_with_its_interactions(client: httpx.AsyncClient, app: FastAPI) -> None:
    statement = await _statement(client)
    resources = statement["rest"][0]["resource"]
    assert {r["type"] for r in resources} == set(RESOURCE_TYPES)
    patient = _resource(statement, "Patient")
    codes = {i["code"] for i in patient["interaction"]}
    assert codes >= TYPE_LEVEL
    has_search = app.state.interactions.search_handler is not None
    assert ("search-type" in codes) is has_search
    assert patient["versioning"] == "versioned"
    assert patient["readHistory"] is True and patient["updateCreate"] is True
    assert {"name": "validate",
            "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"
            } in [{k: op[k] for k in ("name", "definition")} for op in patient["operation"]]
    system = {i["code"] for i in statement["rest"][0]["interaction"]}
    assert {"transaction", "batch", "history-system"} <= system


async def test_search_params_come_from_the_registry(client: httpx.AsyncClient,
                                                    app: FastAPI) -> None:
    repo = app.state.interactions.repo
    repo.registry = Registry.load_default()
    patient = _resource(await _statement(client), "Patient")
    params = {p["name"]: p for p in patient["searchParam"]}
    assert params["birthdate"]["type"] == "date"
    assert params["birthdate"]["definition"] == \
        "http://hl7.org/fhir/SearchParameter/individual-birthdate"
    assert "_id" in params  # common parameters apply to every type
    repo.registry = None
    assert "searchParam" not in _resource(await _statement(client), "Patient")


async def test_registered_operations_and_features_appear(client: httpx.AsyncClient,
                                                         app: FastAPI) -> None:
    first = await client.get("metadata")

    async def ping(*_: Any) -> FhirResponse:
        return FhirResponse(200, b"{}")

    ix = app.state.interactions
    register(ix, OperationSpec("ping", "http://example.org/OperationDefinition/ping", ping,
                               system=True))
    ix.features["conditionalCreate"] = True
    security = {"service": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
        "code": "SMART-on-FHIR"}]}]}
    ix.features["security"] = security
    second = await client.get("metadata")
    statement = second.json()
    assert statement["rest"][0]["operation"][0]["name"] == "ping"
    assert statement["rest"][0]["security"] == security
    assert _resource(statement, "Observation")["conditionalCreate"] is True
    assert fhirkit.validate(second.content) == []
    assert second.headers["etag"] != first.headers["etag"]


async def test_cacheable_with_etag(client: httpx.AsyncClient) -> None:
    r = await client.get("metadata")
    assert "max-age" in r.headers["cache-control"]
    again = await client.get("metadata", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    other = await client.get("metadata", headers={"If-None-Match": 'W/"other"'})
    assert other.status_code == 200 and other.content == r.content
