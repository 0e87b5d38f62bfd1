"""The authorization server inside the whole app (create_app): its routes win over the FHIR
catch-all, and switching auth off removes them loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.config import AuthSettings, Settings


async def test_mounted_in_the_app(client: httpx.AsyncClient) -> None:
    r = await client.get("http://testserver/fhir/.well-known/smart-configuration")
    assert r.status_code == 200
    conf = r.json()
    assert conf["token_endpoint"] == "http://testserver/auth/token"
    jwks = await client.get(conf["jwks_uri"])
    assert jwks.status_code == 200 and jwks.json()["keys"]
    oidc = await client.get("http://testserver/auth/.well-known/openid-configuration")
    assert oidc.json()["issuer"] == "http://testserver/auth"


async def test_security_block_for_the_capability_statement(app: FastAPI) -> None:
    security = app.state.interactions.features["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert security["extension"][0]["url"] == (
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
    assert uris["authorize"] == "http://testserver/auth/authorize"
    assert uris["token"] == "http://testserver/auth/token"
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


async def test_auth_disabled_warns_and_serves_no_auth_routes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'off.db'}",
                        base_url="http://testserver/fhir", log_json=False,
                        auth=AuthSettings(enabled=False))
    with caplog.at_level(logging.WARNING, logger="fhirpm"):
        app = create_app(settings)
    assert "AUTHORIZATION IS DISABLED" in caplog.text
    assert app.state.auth is None
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            assert (await c.get("/auth/jwks")).status_code == 404
