"""CORS for the FHIR API: by default the registered clients' redirect-URI origins, or a
configured list, or any origin."""

from __future__ import annotations

from pathlib import Path

from fhirpm.ops.cors import origin_of
from tests.ops.conftest import ops_settings, running

APP = "https://app.example.org"
PREFLIGHT = {"Access-Control-Request-Method": "PUT",
             "Access-Control-Request-Headers": "authorization, content-type"}


def test_origins_are_normalised() -> None:
    assert origin_of("https://App.Example.org:443/callback?x=1") == "https://app.example.org"
    assert origin_of("http://localhost:3000/cb") == "http://localhost:3000"
    assert origin_of("http://[::1]:8080/") == "http://[::1]:8080"
    assert origin_of("null") is None
    assert origin_of("ftp://x.example") is None
    assert origin_of("https://x.example:99999") is None


async def test_default_is_the_registered_clients_redirect_origins(tmp_path: Path) -> None:
    async with running(ops_settings(tmp_path)) as (app, client):
        app.state.ops.cors.ttl = 0  # re-read the clients on every request
        before = await client.get("/fhir/metadata", headers={"Origin": APP})
        await app.state.auth.clients.add(name="chart app", auth_method="none",
                                         redirect_uris=[APP + ":443/callback"])
        after = await client.get("/fhir/metadata", headers={"Origin": APP})
        preflight = await client.options("/fhir/Patient/1",
                                         headers={"Origin": APP, **PREFLIGHT})
        evil = await client.options("/fhir/Patient/1",
                                    headers={"Origin": "https://evil.example", **PREFLIGHT})
        evil_get = await client.get("/fhir/metadata",
                                    headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in before.headers
    assert after.headers["access-control-allow-origin"] == APP
    assert after.headers["vary"] == "Origin"
    assert "X-Request-ID" in after.headers["access-control-expose-headers"]
    assert "access-control-allow-credentials" not in after.headers  # bearer tokens only
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert evil.status_code == 403
    assert evil.json()["resourceType"] == "OperationOutcome"
    assert "access-control-allow-origin" not in evil.headers
    assert evil_get.status_code == 200 and "access-control-allow-origin" not in evil_get.headers


async def test_a_disabled_clients_origin_is_not_allowed(tmp_path: Path) -> None:
    async with running(ops_settings(tmp_path)) as (app, client):
        app.state.ops.cors.ttl = 0
        await app.state.auth.clients.add(name="retired app", auth_method="none", disabled=True,
                                         redirect_uris=[APP + "/callback"])
        r = await client.get("/fhir/metadata", headers={"Origin": APP})
    assert "access-control-allow-origin" not in r.headers


async def test_a_configured_list_or_any_origin(tmp_path: Path) -> None:
    listed = ops_settings(tmp_path / "a", cors_origins=["https://portal.example"])
    async with running(listed) as (_, client):
        yes = await client.get("/fhir/metadata", headers={"Origin": "https://portal.example"})
        no = await client.get("/fhir/metadata", headers={"Origin": APP})
    anyone = ops_settings(tmp_path / "b", cors_origins=["*"])
    async with running(anyone) as (_, client):
        star = await client.get("/fhir/metadata", headers={"Origin": APP})
    assert yes.headers["access-control-allow-origin"] == "https://portal.example"
    assert "access-control-allow-origin" not in no.headers
    assert star.headers["access-control-allow-origin"] == "*"


async def test_smart_configuration_keeps_its_own_cors_answer(tmp_path: Path) -> None:
    async with running(ops_settings(tmp_path, cors_origins=["*"])) as (_, client):
        found = await client.get("/fhir/.well-known/smart-configuration",
                                 headers={"Origin": APP})
        preflight = await client.options("/fhir/.well-known/smart-configuration",
                                         headers={"Origin": APP, **PREFLIGHT})
    assert found.status_code == 200
    assert len(found.headers.get_list("access-control-allow-origin")) == 1
    assert preflight.status_code == 204
    assert len(preflight.headers.get_list("access-control-allow-origin")) == 1
