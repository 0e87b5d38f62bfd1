"""Auth fixtures: a real SQLite store, the authorization server's routes on an ASGI app, an
HTTP client on it, and `Browser`, which walks the login and consent pages like a person."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from fhirpm.auth import routes
from fhirpm.auth.keys import RING, new_key
from fhirpm.auth.records import KEYS
from fhirpm.auth.server import AuthServer
from fhirpm.config import AuthSettings, Settings
from fhirpm.storage.port import ResourceStore, ResourceVersion
from fhirpm.storage.sqlite import SqliteResourceStore

ORIGIN = "http://testserver"
BASE = ORIGIN + "/fhir"
ISSUER = ORIGIN + "/auth"
TOKEN_URL = ISSUER + "/token"
APP_REDIRECT = "https://app.example.org/callback"
APP_LAUNCH = "https://app.example.org/launch"
PASSWORD = "correct horse battery"
# Cheap hashing keeps the suite fast; production defaults are much stronger.
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 64}


def auth_settings(tmp_path: Path, **auth: Any) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path / 'auth.db'}", base_url=BASE,
                    log_json=False, auth=AuthSettings(**{**FAST, **auth}))


@dataclass
class Env:
    """One server: its parts (to register clients and users) and an HTTP client on it."""

    server: AuthServer
    http: httpx.AsyncClient
    store: SqliteResourceStore

    async def add_patient(self, id_: str, family: str = "Doe") -> None:
        await put_patient(self.store, id_, family)

    async def public_app(self, **spec: Any) -> str:
        client, _ = await self.server.clients.add(**{
            "name": "Test App", "auth_method": "none", "redirect_uris": [APP_REDIRECT],
            "launch_uri": APP_LAUNCH, **spec})
        return client.client_id

    async def confidential_app(self, **spec: Any) -> tuple[str, str]:
        client, secret = await self.server.clients.add(**{
            "name": "Confidential App", "auth_method": "client_secret_basic",
            "redirect_uris": [APP_REDIRECT], "launch_uri": APP_LAUNCH, **spec})
        assert secret is not None
        return client.client_id, secret


async def put_patient(store: ResourceStore, id_: str, family: str = "Doe") -> None:
    """A Patient straight into the store (the auth server only reads them)."""
    body = orjson.dumps({"resourceType": "Patient", "id": id_,
                         "name": [{"family": family, "given": ["Pat"]}]})
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    async with store.unit_of_work() as uow:
        await uow.put(ResourceVersion("Patient", id_, 1, stamp, "POST", body), [],
                      expected_version=0)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with make_env(auth_settings(tmp_path)) as made:
        yield made


@asynccontextmanager
async def make_env(settings: Settings) -> AsyncIterator[Env]:
    """An opened store, an AuthServer on it and an HTTP client on its routes."""
    store = SqliteResourceStore.from_url(settings.store_url)
    await store.open()
    server = AuthServer(settings, store)
    await server.docs.put(KEYS, RING, {"keys": [shared_key()]})  # no keygen per test
    app = Starlette(routes=routes.build(server, "/fhir"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=ORIGIN) as http:
            yield Env(server, http, store)
    finally:
        await store.close()


@functools.cache
def shared_key() -> dict[str, Any]:
    """One server signing key for the whole run (generating RSA keys is slow)."""
    return new_key()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden field {name} in page"
    return m.group(1)


@dataclass
class Browser:
    """A user agent with its own cookie jar, driving the server's HTML pages."""

    http: httpx.AsyncClient
    cookies: httpx.Cookies = field(default_factory=httpx.Cookies)

    def _headers(self) -> dict[str, str]:
        jar = "; ".join(f"{c.name}={c.value}" for c in self.cookies.jar)
        return {"Cookie": jar} if jar else {}

    def _keep(self, r: httpx.Response) -> httpx.Response:
        self.cookies.extract_cookies(r)
        self.http.cookies.clear()  # the shared client must not carry one browser's cookies
        return r

    async def get(self, url: str) -> httpx.Response:
        return self._keep(await self.http.get(url, headers=self._headers()))

    async def post(self, url: str, data: dict[str, str] | list[tuple[str, str]]) -> httpx.Response:
        headers = {**self._headers(), "Content-Type": "application/x-www-form-urlencoded"}
        return self._keep(await self.http.post(url, content=urlencode(data), headers=headers))

    async def authorize(self, client_id: str, scope: str, *, challenge: str,
                        state: str = "st-1", aud: str = BASE, method: str = "GET",
                        **extra: str) -> httpx.Response:
        params = {"response_type": "code", "client_id": client_id,
                  "redirect_uri": APP_REDIRECT, "scope": scope, "state": state, "aud": aud,
                  "code_challenge": challenge, "code_challenge_method": "S256", **extra}
        params = {k: v for k, v in params.items() if v is not None}
        if method == "POST":
            return await self.post(ISSUER + "/authorize", params)
        return await self.get(ISSUER + "/authorize?" + urlencode(params))

    async def follow(self, r: httpx.Response) -> httpx.Response:
        """Follow redirects that stay on this server; stop at the app's redirect URI."""
        while r.status_code in (302, 303) and r.headers["location"].startswith(ORIGIN):
            r = await self.get(r.headers["location"])
        return r

    async def login(self, page: httpx.Response, username: str,
                    password: str = PASSWORD) -> httpx.Response:
        assert page.status_code in (200, 401) and 'name="password"' in page.text, page.text
        r = await self.post(ISSUER + "/login", {
            "csrf": hidden(page.text, "csrf"), "next": hidden(page.text, "next"),
            "username": username, "password": password})
        return await self.follow(r)

    async def consent(self, page: httpx.Response, scopes: list[str] | None = None,
                      decision: str = "allow") -> httpx.Response:
        assert page.status_code == 200 and 'name="decision"' in page.text, page.text
        offered = re.findall(r'name="scope" value="([^"]*)"', page.text)
        chosen = offered if scopes is None else scopes
        data = [("csrf", hidden(page.text, "csrf")), ("txn", hidden(page.text, "txn")),
                ("decision", decision), *(("scope", s) for s in chosen)]
        return await self.post(ISSUER + "/consent", data)

    async def pick(self, page: httpx.Response, patient: str) -> httpx.Response:
        assert page.status_code == 200 and "Choose a patient" in page.text, page.text
        r = await self.post(ISSUER + "/patient", {
            "csrf": hidden(page.text, "csrf"), "txn": hidden(page.text, "txn"),
            "patient_id": patient})
        return await self.follow(r)


async def code_flow(env: Env, client_id: str, scope: str, *, user: str = "doc",
                    patient: str | None = None, extra: dict[str, str] | None = None,
                    granted: list[str] | None = None) -> tuple[dict[str, str], str]:
    """A whole standalone authorization: the app's callback parameters and the verifier."""
    browser = Browser(env.http)
    verifier, challenge = pkce()
    r = await browser.follow(await browser.authorize(client_id, scope, challenge=challenge,
                                                     **(extra or {})))
    r = await browser.login(r, user)
    if patient is not None:
        r = await browser.pick(r, patient)
    r = await browser.consent(r, granted)
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(APP_REDIRECT)
    return query_of(r.headers["location"]), verifier


async def exchange(env: Env, client_id: str, code: str, verifier: str,
                   **extra: Any) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_REDIRECT,
            "code_verifier": verifier, "client_id": client_id, **extra}
    return await env.http.post(TOKEN_URL, data={k: v for k, v in data.items() if v is not None})
