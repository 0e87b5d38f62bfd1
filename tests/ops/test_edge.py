"""The edge middleware on the real app: request ids, security headers, access log lines,
unexpected errors, trusted forwarded headers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhirpm.logs import JsonFormatter
from fhirpm.ops.context import RequestIdFilter, current_request_id
from tests.ops.conftest import FHIR_JSON, ops_settings, running

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Rossi"}]}


async def test_every_response_has_a_request_id_and_a_sane_incoming_one_is_kept(
        tmp_path: Path) -> None:
    async with running(ops_settings(tmp_path)) as (_, client):
        made = await client.get("/fhir/metadata")
        kept = await client.get("/fhir/metadata", headers={"X-Request-ID": "trace-42.a:b"})
        hostile = await client.get("/fhir/metadata",
                                   headers={"X-Request-ID": "evil\tid<script>"})
        too_long = await client.get("/fhir/metadata", headers={"X-Request-ID": "a" * 129})
        missing = await client.get("/fhir/Nope/1")
    assert made.status_code == 200
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    generated = {made.headers["x-request-id"], hostile.headers["x-request-id"],
                 too_long.headers["x-request-id"], missing.headers["x-request-id"]}
    assert len(generated) == 4  # all fresh and distinct
    assert all(rid.isascii() and 0 < len(rid) <= 128 and "<" not in rid for rid in generated)
    assert missing.status_code == 404  # errors carry the id too


async def test_security_headers(tmp_path: Path) -> None:
    async with running(ops_settings(tmp_path)) as (_, client):
        api = await client.get("/fhir/metadata")
        login = await client.get("/auth/login", params={"next": "/authorize"})
        jwks = await client.get("/auth/jwks")
        token = await client.post("/auth/token", data={"grant_type": "nonsense"})
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in api.headers  # plain HTTP: no HSTS
    assert "x-frame-options" not in api.headers
    # the login page: never framed, never cached, no referrer, one value each
    assert login.headers.get_list("x-frame-options") == ["DENY"]
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
    assert login.headers.get_list("cache-control") == ["no-store"]
    assert login.headers["referrer-policy"] == "no-referrer"
    assert login.headers.get_list("x-content-type-options") == ["nosniff"]
    # auth machine endpoints: no-store unless they chose caching themselves (JWKS)
    assert token.status_code == 400 and token.headers["cache-control"] == "no-store"
    assert jwks.headers.get_list("cache-control") == ["public, max-age=300"]


async def test_hsts_only_over_https_as_a_trusted_proxy_reports_it(tmp_path: Path) -> None:
    settings = ops_settings(tmp_path, trusted_proxies=["10.0.0.0/8"], hsts_seconds=600)
    https = {"X-Forwarded-Proto": "https"}
    async with running(settings, client_ip="10.1.2.3") as (_, via_proxy):
        proxied = await via_proxy.get("/fhir/metadata", headers=https)
        plain = await via_proxy.get("/fhir/metadata", headers={"X-Forwarded-Proto": "http"})
    async with running(settings, client_ip="192.0.2.7") as (_, direct):
        forged = await direct.get("/fhir/metadata", headers=https)
    assert proxied.headers["strict-transport-security"] == "max-age=600"
    assert "strict-transport-security" not in plain.headers
    assert "strict-transport-security" not in forged.headers  # not from a trusted proxy


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records
            if r.name == "fhirpm.access"]


async def test_access_log_is_one_json_line_per_request_without_the_query(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = ops_settings(tmp_path, trusted_proxies=["10.0.0.1"])
    caplog.set_level(logging.INFO, logger="fhirpm.access")
    async with running(settings, client_ip="10.0.0.1") as (_, client):
        await client.put("/fhir/Patient/p1", json=PATIENT, headers=FHIR_JSON)
        await client.get("/fhir/Patient", params={"family": "Rossi"},
                         headers={"X-Request-ID": "find-rossi",
                                  "X-Forwarded-For": "203.0.113.9, 10.0.0.1"})
        await client.get("/healthz")  # probes are not logged when fine
    lines = _access_lines(caplog)
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("PUT", "/fhir/Patient/p1", 201), ("GET", "/fhir/Patient", 200)]
    search = lines[1]
    assert search["request_id"] == "find-rossi"
    assert search["client"] == "203.0.113.9"  # the real client, behind the trusted proxy
    assert search["interaction"] == "search-type"
    assert isinstance(search["duration_ms"], float) and search["duration_ms"] >= 0
    assert "Rossi" not in json.dumps(lines)  # search terms may be patient data


async def test_log_lines_inside_a_request_name_it(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str | None] = []

    async def noisy(request: Request) -> Response:
        seen.append(current_request_id())
        logging.getLogger("fhirpm.test").warning("inside the handler")
        return Response(b"ok")

    def setup(app):
        app.router.routes.insert(0, Route("/noisy", noisy))

    caplog.handler.addFilter(RequestIdFilter())
    async with running(ops_settings(tmp_path), setup=setup) as (_, client):
        answer = await client.get("/noisy", headers={"X-Request-ID": "abc-1"})
    record = next(r for r in caplog.records if r.name == "fhirpm.test")
    assert seen == ["abc-1"] and answer.headers["x-request-id"] == "abc-1"
    assert record.request_id == "abc-1"
    assert current_request_id() is None  # not leaked past the request


async def test_an_unexpected_error_is_an_operation_outcome_naming_the_request(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    def setup(app):
        app.router.routes.insert(0, Route("/broken", broken))

    async with running(ops_settings(tmp_path), setup=setup) as (_, client):
        answer = await client.get("/broken")
    assert answer.status_code == 500
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "exception"
    assert answer.headers["x-request-id"] in outcome["issue"][0]["diagnostics"]
    assert "bug" not in answer.text  # details stay in the log
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


async def test_forwarded_host_and_proto_from_a_trusted_proxy_shape_request_urls(
        tmp_path: Path) -> None:
    urls: list[str] = []

    async def where(request: Request) -> Response:
        urls.append(str(request.url))
        return Response(request.client.host if request.client else "")

    def setup(app):
        app.router.routes.insert(0, Route("/where", where))

    settings = ops_settings(tmp_path, trusted_proxies=["127.0.0.1"])
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ehr.example.org",
               "X-Forwarded-For": "198.51.100.4"}
    async with running(settings, setup=setup) as (_, client):
        trusted = await client.get("/where", headers=headers)
        bad_host = await client.get("/where", headers={"X-Forwarded-Host": "a b/c"})
    async with running(settings, client_ip="192.0.2.1", setup=setup) as (_, untrusted):
        forged = await untrusted.get("/where", headers=headers)
    assert urls == ["https://ehr.example.org/where", "http://testserver/where",
                    "http://testserver/where"]
    assert trusted.text == "198.51.100.4"
    assert bad_host.text == "127.0.0.1"
    assert forged.text == "192.0.2.1"
