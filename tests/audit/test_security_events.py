"""Logins, consent decisions and tokens issued, refreshed and revoked leave AuditEvents."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from tests.audit.conftest import (
    audit_settings,
    client_of,
    patient_of,
    subtype,
    user_of,
    watch,
)
from tests.auth.conftest import (
    FAST,
    ORIGIN,
    TOKEN_URL,
    Browser,
    Env,
    code_flow,
    exchange,
    pkce,
    put_patient,
)
from tests.bearer import use_shared_key


@pytest.fixture
async def audit_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The app with cheap password hashing (production's argon2 costs seconds)."""
    app = create_app(audit_settings(tmp_path, auth=FAST))
    async with app.router.lifespan_context(app):
        yield app


async def env_of(app: FastAPI, http: httpx.AsyncClient) -> Env:
    await use_shared_key(app.state.auth)
    return Env(app.state.auth, http, app.state.store)


def queried(event: dict) -> str:
    return next(base64.b64decode(e["query"]).decode() for e in event["entity"] if "query" in e)


async def test_login_consent_and_token_lifecycle(audit_app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=audit_app),
                                 base_url=ORIGIN) as http:
        env = await env_of(audit_app, http)
        await env.server.users.add("doc", "correct horse battery", fhir_user="Practitioner/d1")
        await put_patient(env.store, "p1")
        client_id = await env.public_app()
        seen = await watch(audit_app)
        callback, verifier = await code_flow(env, client_id,
                                             "launch/patient offline_access patient/*.rs",
                                             patient="p1")
        r = await exchange(env, client_id, callback["code"], verifier)
        assert r.status_code == 200, r.text
        tokens = r.json()
        r = await http.post(TOKEN_URL, data={"grant_type": "refresh_token",
                                             "refresh_token": tokens["refresh_token"],
                                             "client_id": client_id})
        assert r.status_code == 200, r.text
        r = await http.post("/auth/revoke", data={"token": tokens["refresh_token"],
                                                  "client_id": client_id})
        assert r.status_code == 200, r.text
        events = [e for e in await seen.new() if subtype(e) != "read"]  # the picker reads

    kinds = [subtype(e) for e in events]
    assert kinds == ["110122", "consent-grant", "ITI-71", "ITI-71", "token-revoke"]
    login, consent, issued, refreshed, revoked = events
    assert login["outcome"] == "0" and login["agent"][0]["altId"] == "doc"
    assert client_of(consent) == client_id and patient_of(consent) == "Patient/p1"
    assert user_of(consent)[1] == "doc"
    assert client_of(issued) == client_id and user_of(issued)[1] == "doc"
    assert patient_of(issued) == "Patient/p1"
    assert "code=%5Bredacted%5D" in queried(issued)  # secrets never reach the trail
    assert tokens["refresh_token"] not in str(events)
    assert "grant_type=refresh_token" in queried(refreshed)
    assert revoked["outcome"] == "0" and client_of(revoked) == client_id


async def test_failed_login_and_refused_token(audit_app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=audit_app),
                                 base_url=ORIGIN) as http:
        env = await env_of(audit_app, http)
        await env.server.users.add("doc", "correct horse battery")
        client_id = await env.public_app()
        browser = Browser(http)
        page = await browser.follow(await browser.authorize(client_id, "patient/*.rs",
                                                            challenge=pkce()[1]))
        seen = await watch(audit_app)
        r = await browser.login(page, "doc", "wrong password")
        assert r.status_code == 401
        r = await http.post(TOKEN_URL, data={"grant_type": "authorization_code",
                                             "code": "stolen", "client_id": "nobody"})
        assert r.status_code in (400, 401)
        login, token = await seen.new()
    assert (subtype(login), login["outcome"]) == ("110122", "4")
    assert login["agent"][0]["altId"] == "doc" and login["outcomeDesc"]
    assert (subtype(token), token["outcome"], client_of(token)) == ("ITI-71", "4", "nobody")
    assert "invalid_client" in token["outcomeDesc"]
