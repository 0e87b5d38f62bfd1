"""The admin API over real HTTP (the whole app, a real SQLite file): the first administrator
bootstrapped with `fhirpm clients add --admin`, every endpoint and its refusals, clients it
registers completing real flows, and disabling or deleting revoking what was granted."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirpm.app import create_app
from fhirpm.cli import main
from fhirpm.config import AuthSettings, Settings
from tests.auth.conftest import (
    APP_REDIRECT,
    BASE,
    FAST,
    ISSUER,
    ORIGIN,
    PASSWORD,
    TOKEN_URL,
    Browser,
    Env,
    code_flow,
    exchange,
    pkce,
    put_patient,
)
from tests.auth.test_backend import assertion, make_key, token
from tests.bearer import mint, use_shared_key

ADMIN = ISSUER + "/admin"
APP_SCOPE = "openid fhirUser offline_access user/*.rs"


@dataclass
class Site:
    env: Env  # server parts and an HTTP client on the whole app
    admin_id: str
    admin_secret: str
    headers: dict[str, str]  # a fhirpm/admin bearer token

    @property
    def http(self) -> httpx.AsyncClient:
        return self.env.http

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self.headers if headers is None else headers}
        if body is not None:
            kwargs["json"] = body
        return await self.http.request(method, ADMIN + path, **kwargs)


@pytest.fixture
def bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What an operator does on a fresh install: `fhirpm clients add --admin`."""
    monkeypatch.setenv("FHIRPM_STORE_URL", f"sqlite:///{tmp_path / 'admin.db'}")
    monkeypatch.setenv("FHIRPM_BASE_URL", BASE)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    assert main(["clients", "add", "--admin", "--name", "Practice admin"]) == 0
    monkeypatch.undo()
    return json.loads(out.getvalue())


async def admin_token(http: httpx.AsyncClient, client_id: str, secret: str,
                      scope: str = "fhirpm/admin") -> httpx.Response:
    return await http.post(TOKEN_URL, auth=(client_id, secret),
                           data={"grant_type": "client_credentials", "scope": scope})


def bearer(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
async def site(tmp_path: Path, bootstrap: dict[str, Any]) -> AsyncIterator[Site]:
    printed = bootstrap
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'admin.db'}", base_url=BASE,
                        log_json=False, auth=AuthSettings(**FAST, token_recheck_seconds=0))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await use_shared_key(app.state.auth)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as http:
            env = Env(app.state.auth, http, app.state.store)
            r = await admin_token(http, printed["client_id"], printed["client_secret"])
            yield Site(env, printed["client_id"], printed["client_secret"], bearer(r))


# -- bootstrap and protection -------------------------------------------------------------


async def test_bootstrap_client_administers(site: Site, tmp_path: Path) -> None:
    r = await site.call("GET", "/clients")
    assert r.status_code == 200 and r.headers["cache-control"].startswith("no-store")
    [listed] = r.json()["clients"]
    assert listed["client_id"] == site.admin_id and listed["admin"] is True
    assert listed["scope"] == "fhirpm/admin" and listed["grant_types"] == ["client_credentials"]
    assert listed["token_endpoint_auth_method"] == "client_secret_basic"
    assert "client_secret" not in listed and "secret_digest" not in listed
    introspected = await site.http.post(ISSUER + "/introspect", auth=(
        site.admin_id, site.admin_secret), data={
        "token": site.headers["Authorization"].split()[1]})
    assert introspected.json()["scope"] == "fhirpm/admin"


ENDPOINTS = [("GET", "/clients"), ("POST", "/clients"), ("GET", "/clients/x"),
             ("PATCH", "/clients/x"), ("DELETE", "/clients/x"), ("POST", "/clients/x/secret"),
             ("GET", "/users"), ("POST", "/users"), ("GET", "/users/x"), ("PATCH", "/users/x"),
             ("DELETE", "/users/x"), ("POST", "/users/x/password")]


async def test_every_endpoint_needs_an_admin_token(site: Site) -> None:
    staff = await mint(site.env.server, "user/*.cruds openid", sub="doc",
                       client_id=site.admin_id)
    for method, path in ENDPOINTS:  # one app for all: each setup costs more than the checks
        where = (method, path)
        body = {} if method in ("POST", "PATCH") else None
        r = await site.call(method, path, body, headers={})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", where
        assert r.headers["www-authenticate"].startswith("Bearer"), where
        r = await site.call(method, path, body, headers={"Authorization": "Bearer not.a.jwt"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_token", where
        assert 'error="invalid_token"' in r.headers["www-authenticate"], where
        r = await site.call(method, path, body, headers={"Authorization": f"Bearer {staff}"})
        assert r.status_code == 403 and r.json()["error"] == "insufficient_scope", where
        assert 'scope="fhirpm/admin"' in r.headers["www-authenticate"], where


async def test_admin_scope_on_a_token_of_a_non_admin_client_is_refused(site: Site) -> None:
    """Defence in depth: even a token carrying the scope is refused unless its client (and
    user) are administrators now."""
    r = await site.call("POST", "/clients", {"client_name": "App", "redirect_uris": [
        APP_REDIRECT]})
    normal = r.json()["client_id"]
    forged = await mint(site.env.server, "fhirpm/admin", sub=normal, client_id=normal)
    r = await site.call("GET", "/clients", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 403
    unknown = await mint(site.env.server, "fhirpm/admin", sub="nobody", client_id="nobody")
    r = await site.call("GET", "/clients", headers={"Authorization": f"Bearer {unknown}"})
    assert r.status_code == 401
    await site.call("POST", "/users", {"username": "clerk", "password": PASSWORD})
    as_clerk = await mint(site.env.server, "fhirpm/admin", sub="clerk",
                          client_id=site.admin_id)
    r = await site.call("GET", "/users", headers={"Authorization": f"Bearer {as_clerk}"})
    assert r.status_code == 403 and "administrator" in r.json()["error_description"]


async def test_a_normal_client_cannot_get_the_admin_scope(site: Site) -> None:
    key = make_key("ES384")
    r = await site.call("POST", "/clients", {
        "client_name": "Lab", "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"], "jwks": {"keys": [key.as_dict(private=False)]}})
    lab = r.json()["client_id"]
    r = await token(site.env, assertion(key, lab), "system/*.rs fhirpm/admin")
    assert r.status_code == 200 and r.json()["scope"] == "system/*.rs"
    r = await token(site.env, assertion(key, lab), "fhirpm/admin")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = await site.call("POST", "/clients", {"client_name": "Sneaky", "scope": "fhirpm/admin",
                                             "redirect_uris": [APP_REDIRECT]})
    assert r.status_code == 400 and "admin" in r.json()["error_description"]
    r = await site.call("PATCH", f"/clients/{lab}", {"scope": "system/*.rs fhirpm/admin"})
    assert r.status_code == 400


async def test_dynamic_registration_cannot_register_an_admin(tmp_path: Path) -> None:
    from tests.auth.conftest import auth_settings, make_env

    async with make_env(auth_settings(tmp_path, registration_enabled=True)) as env:
        r = await env.http.post(ISSUER + "/register", json={
            "client_name": "x", "redirect_uris": [APP_REDIRECT], "scope": "fhirpm/admin"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_client_metadata"
        r = await env.http.post(ISSUER + "/register", json={
            "client_name": "x", "redirect_uris": [APP_REDIRECT], "admin": True})
        assert r.status_code == 201 and r.json()["admin"] is False


# -- clients ------------------------------------------------------------------------------


async def test_client_lifecycle(site: Site) -> None:
    r = await site.call("POST", "/clients", {
        "client_name": "Chart", "redirect_uris": [APP_REDIRECT],
        "launch_uri": "https://app.example.org/launch"})
    assert r.status_code == 201, r.text
    created = r.json()
    client_id = created["client_id"]
    assert r.headers["location"] == f"{ADMIN}/clients/{client_id}"
    assert created["token_endpoint_auth_method"] == "client_secret_basic"  # RFC 7591 default
    assert created["client_secret"] and created["disabled"] is False
    r = await site.call("GET", f"/clients/{client_id}")
    assert r.status_code == 200 and "client_secret" not in r.json()
    assert {k: v for k, v in created.items() if k != "client_secret"} == r.json()
    r = await site.call("PATCH", f"/clients/{client_id}", {
        "redirect_uris": [APP_REDIRECT, "https://app.example.org/cb2"],
        "scope": "openid user/*.rs", "client_name": "Chart 2"})
    assert r.status_code == 200, r.text
    assert r.json()["redirect_uris"][1] == "https://app.example.org/cb2"
    assert r.json()["scope"] == "openid user/*.rs" and r.json()["client_name"] == "Chart 2"
    r = await site.call("PATCH", f"/clients/{client_id}", {"scope": None})
    assert r.json()["scope"].startswith("openid fhirUser")  # back to the default
    r = await site.call("POST", f"/clients/{client_id}/secret")
    assert r.status_code == 200 and r.json()["client_secret"] != created["client_secret"]
    listed = (await site.call("GET", "/clients")).json()["clients"]
    assert sorted(c["client_id"] for c in listed) == sorted([site.admin_id, client_id])
    r = await site.call("DELETE", f"/clients/{client_id}")
    assert r.status_code == 204
    assert (await site.call("GET", f"/clients/{client_id}")).status_code == 404
    assert (await site.call("DELETE", f"/clients/{client_id}")).status_code == 404


async def test_public_and_backend_clients(site: Site) -> None:
    r = await site.call("POST", "/clients", {
        "client_name": "Viewer", "token_endpoint_auth_method": "none",
        "redirect_uris": [APP_REDIRECT]})
    assert r.status_code == 201 and "client_secret" not in r.json()
    key = make_key("ES384")
    r = await site.call("POST", "/clients", {
        "client_name": "Feed", "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"], "jwks": {"keys": [key.as_dict(private=True)]}})
    assert r.status_code == 201, r.text
    assert r.json()["scope"] == "system/*.cruds" and "d" not in r.json()["jwks"]["keys"][0]
    r = await site.call("POST", "/clients", {
        "client_name": "Feed 2", "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"], "jwks_uri": "https://feed.example/jwks"})
    assert r.status_code == 201 and r.json()["jwks_uri"] == "https://feed.example/jwks"
    r = await site.call("POST", "/clients", {
        "client_id": "feed-3", "client_name": "Feed 3", "token_endpoint_auth_method": "none",
        "redirect_uris": [APP_REDIRECT]})
    assert r.status_code == 201 and r.json()["client_id"] == "feed-3"


INVALID_CLIENTS: list[tuple[Any, str]] = [
    ([], "JSON object"),
    ({"client_nam": "typo"}, "unknown"),
    ({"client_name": 5}, "type"),
    ({"redirect_uris": "https://a.example/cb"}, "type"),
    ({"redirect_uris": [5]}, "strings"),
    ({"admin": "yes"}, "type"),
    ({"redirect_uris": ["not a url"]}, "redirect_uri"),
    ({"token_endpoint_auth_method": "private_key_jwt",
      "grant_types": ["client_credentials"]}, "jwks"),
    ({"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"]},
     "client_credentials"),
    ({"grant_types": ["password"], "redirect_uris": [APP_REDIRECT]}, "unsupported"),
    ({"token_endpoint_auth_method": "magic"}, "token_endpoint_auth_method"),
    ({"client_id": "a/b", "redirect_uris": [APP_REDIRECT]}, "client_id"),
]


async def test_invalid_clients_are_400(site: Site) -> None:
    for body, words in INVALID_CLIENTS:
        r = await site.call("POST", "/clients", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"] == "invalid_request", body
        assert words in r.json()["error_description"], (body, r.text)
    listed = (await site.call("GET", "/clients")).json()["clients"]
    assert [c["client_id"] for c in listed] == [site.admin_id]  # nothing half-written


async def test_client_request_errors(site: Site) -> None:
    h = site.headers
    r = await site.http.post(ADMIN + "/clients", content=b"{", headers={
        **h, "Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error_description"]
    r = await site.http.post(ADMIN + "/clients", content=b"client_name=x", headers={
        **h, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = await site.http.post(ADMIN + "/clients", content=b" " * 70_000, headers={
        **h, "Content-Type": "application/json"})
    assert r.status_code == 413
    for method, path, body in [("GET", "/clients/nope", None),
                               ("PATCH", "/clients/nope", {"client_name": "x"}),
                               ("DELETE", "/clients/nope", None),
                               ("POST", "/clients/nope/secret", None)]:
        r = await site.call(method, path, body)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (method, path)
    r = await site.call("PATCH", f"/clients/{site.admin_id}",
                        {"token_endpoint_auth_method": "none"})
    assert r.status_code == 400 and "read-only" in r.json()["error_description"]
    spec = {"client_id": "twice", "token_endpoint_auth_method": "none",
            "redirect_uris": [APP_REDIRECT]}
    assert (await site.call("POST", "/clients", spec)).status_code == 201
    r = await site.call("POST", "/clients", spec)
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    r = await site.call("PUT", "/clients/twice", spec)
    assert r.status_code == 405 and r.headers["allow"] == "GET, PATCH, DELETE"
    r = await site.call("POST", "/clients/twice/secret")
    assert r.status_code == 400  # a public client has no secret


async def test_no_cors_on_the_admin_api(site: Site) -> None:
    r = await site.http.options(ADMIN + "/clients", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    r = await site.call("GET", "/clients", headers={**site.headers,
                                                    "Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# -- created clients work; disabled and deleted ones stop ---------------------------------


async def test_created_backend_client_reads_fhir_until_disabled(site: Site) -> None:
    await put_patient(site.env.store, "p1")
    key = make_key("RS384")
    r = await site.call("POST", "/clients", {
        "client_name": "Feed", "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"], "jwks": {"keys": [key.as_dict(private=False)]}})
    feed = r.json()["client_id"]
    got = await token(site.env, assertion(key, feed), "system/Patient.rs")
    headers = bearer(got)
    assert (await site.http.get(BASE + "/Patient/p1", headers=headers)).status_code == 200
    r = await site.call("PATCH", f"/clients/{feed}", {"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    read = await site.http.get(BASE + "/Patient/p1", headers=headers)
    assert read.status_code == 401  # its token was revoked
    again = await token(site.env, assertion(key, feed), "system/Patient.rs")
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    await site.call("PATCH", f"/clients/{feed}", {"disabled": False})
    assert (await site.http.get(BASE + "/Patient/p1", headers=headers)).status_code == 401
    fresh = bearer(await token(site.env, assertion(key, feed), "system/Patient.rs"))
    assert (await site.http.get(BASE + "/Patient/p1", headers=fresh)).status_code == 200


async def confidential_app_with_user(site: Site) -> tuple[str, str]:
    r = await site.call("POST", "/clients", {"client_name": "Chart",
                                             "redirect_uris": [APP_REDIRECT]})
    assert r.status_code == 201
    r2 = await site.call("POST", "/users", {"username": "doc", "password": PASSWORD,
                                            "fhirUser": "Practitioner/d1", "name": "Dr Doc"})
    assert r2.status_code == 201, r2.text
    return r.json()["client_id"], r.json()["client_secret"]


async def code_tokens(site: Site, client_id: str, secret: str,
                      scope: str = APP_SCOPE) -> httpx.Response:
    callback, verifier = await code_flow(site.env, client_id, scope, user="doc")
    return await exchange(site.env, client_id, callback["code"], verifier,
                          client_secret=secret)


@pytest.mark.parametrize("how", ["disable", "delete"])
async def test_code_flow_then_disable_or_delete_revokes(site: Site, how: str) -> None:
    client_id, secret = await confidential_app_with_user(site)
    r = await code_tokens(site, client_id, secret)
    assert r.status_code == 200, r.text
    issued = r.json()
    assert issued["scope"] == APP_SCOPE and issued["refresh_token"]
    await put_patient(site.env.store, "p2")
    headers = bearer(r)
    assert (await site.http.get(BASE + "/Patient/p2", headers=headers)).status_code == 200
    callback, verifier = await code_flow(site.env, client_id, APP_SCOPE, user="doc")
    if how == "disable":
        r = await site.call("PATCH", f"/clients/{client_id}", {"disabled": True})
        assert r.status_code == 200
    else:
        assert (await site.call("DELETE", f"/clients/{client_id}")).status_code == 204
    assert (await site.http.get(BASE + "/Patient/p2", headers=headers)).status_code == 401
    refreshed = await site.http.post(TOKEN_URL, auth=(client_id, secret), data={
        "grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})
    assert refreshed.status_code == 401 and refreshed.json()["error"] == "invalid_client"
    late = await exchange(site.env, client_id, callback["code"], verifier,
                          client_secret=secret)  # a code issued before: worthless now
    assert late.status_code == 401
    browser = Browser(site.http)
    page = await browser.authorize(client_id, APP_SCOPE, challenge=pkce()[1])
    assert page.status_code == 400 and "not registered" in page.text
    if how == "disable":  # back on: new sign-ins work, the old grant stays dead
        await site.call("PATCH", f"/clients/{client_id}", {"disabled": False})
        assert (await code_tokens(site, client_id, secret)).status_code == 200
        refreshed = await site.http.post(TOKEN_URL, auth=(client_id, secret), data={
            "grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


async def test_narrowing_a_client_revokes_its_grants(site: Site) -> None:
    client_id, secret = await confidential_app_with_user(site)
    headers = bearer(await code_tokens(site, client_id, secret))
    await put_patient(site.env.store, "p3")
    r = await site.call("PATCH", f"/clients/{client_id}", {"redirect_uris": [
        APP_REDIRECT, "https://app.example.org/other"]})
    assert r.status_code == 200  # not a change of rights: tokens live on
    assert (await site.http.get(BASE + "/Patient/p3", headers=headers)).status_code == 200
    await site.call("PATCH", f"/clients/{client_id}", {"scope": "openid user/Patient.rs"})
    assert (await site.http.get(BASE + "/Patient/p3", headers=headers)).status_code == 401


# -- the admin scope through a user's sign-in ---------------------------------------------


async def admin_app(site: Site) -> tuple[str, str]:
    r = await site.call("POST", "/clients", {
        "client_name": "Admin console", "admin": True, "redirect_uris": [APP_REDIRECT]})
    assert r.status_code == 201, r.text
    assert "fhirpm/admin" in r.json()["scope"]
    return r.json()["client_id"], r.json()["client_secret"]


async def test_admin_user_gets_the_admin_scope_others_do_not(site: Site) -> None:
    client_id, secret = await admin_app(site)
    await site.call("POST", "/users", {"username": "boss", "password": PASSWORD,
                                       "fhirUser": "Practitioner/b1", "admin": True})
    await site.call("POST", "/users", {"username": "doc", "password": PASSWORD,
                                       "fhirUser": "Practitioner/d1"})
    scope = "openid fhirpm/admin"
    callback, verifier = await code_flow(site.env, client_id, scope, user="boss")
    r = await exchange(site.env, client_id, callback["code"], verifier, client_secret=secret)
    assert r.json()["scope"] == scope
    assert (await site.call("GET", "/users", headers=bearer(r))).status_code == 200
    # a non-admin user is not even offered it
    browser = Browser(site.http)
    verifier, challenge = pkce()
    page = await browser.follow(await browser.authorize(client_id, scope, challenge=challenge))
    page = await browser.login(page, "doc")
    assert "fhirpm/admin" not in page.text and 'value="openid"' in page.text
    r = await browser.consent(page, ["openid", "fhirpm/admin"])  # posting it anyway
    code = r.headers["location"].split("code=")[1].split("&")[0]
    r = await exchange(site.env, client_id, code, verifier, client_secret=secret)
    assert r.json()["scope"] == "openid"
    assert (await site.call("GET", "/users", headers=bearer(r))).status_code == 403


async def test_a_patient_context_token_never_gets_the_admin_scope(site: Site) -> None:
    client_id, secret = await admin_app(site)
    await site.call("POST", "/users", {"username": "boss", "password": PASSWORD,
                                       "fhirUser": "Practitioner/b1", "admin": True})
    await put_patient(site.env.store, "p9")
    callback, verifier = await code_flow(site.env, client_id,
                                         "launch/patient patient/*.rs fhirpm/admin",
                                         user="boss", patient="p9")
    r = await exchange(site.env, client_id, callback["code"], verifier, client_secret=secret)
    assert r.status_code == 200 and r.json()["patient"] == "p9"
    assert "fhirpm/admin" not in r.json()["scope"].split()
    r = await site.call("POST", "/users", {"username": "pat", "password": PASSWORD,
                                           "fhirUser": "Patient/p9", "admin": True})
    assert r.status_code == 400 and "Patient" in r.json()["error_description"]


# -- users --------------------------------------------------------------------------------


async def test_user_lifecycle(site: Site) -> None:
    r = await site.call("POST", "/users", {"username": "nurse", "password": PASSWORD,
                                           "fhirUser": "Practitioner/n1", "name": "N"})
    assert r.status_code == 201 and r.headers["location"] == f"{ADMIN}/users/nurse"
    assert r.json() == {"username": "nurse", "fhirUser": "Practitioner/n1", "name": "N",
                        "admin": False, "disabled": False}
    listed = (await site.call("GET", "/users")).json()["users"]
    assert listed == [r.json()]
    assert "hash" not in json.dumps(listed) and "argon2" not in json.dumps(listed)
    r = await site.call("PATCH", "/users/nurse", {"name": "Nurse N", "admin": True})
    assert r.status_code == 200 and r.json()["name"] == "Nurse N" and r.json()["admin"]
    assert (await site.call("GET", "/users/nurse")).json() == r.json()
    r = await site.call("POST", "/users", {"username": "nurse", "password": PASSWORD})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert (await site.call("DELETE", "/users/nurse")).status_code == 204
    for method, path, body in [("GET", "/users/nurse", None),
                               ("PATCH", "/users/nurse", {"name": "x"}),
                               ("DELETE", "/users/nurse", None),
                               ("POST", "/users/nurse/password", {"password": PASSWORD})]:
        r = await site.call(method, path, body)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (method, path)


INVALID_USERS: list[dict[str, Any]] = [
    {"username": "x"}, {"password": PASSWORD}, {"username": "x", "password": "short"},
    {"username": "bad name", "password": PASSWORD},
    {"username": "x", "password": PASSWORD, "fhirUser": "Observation/1"},
    {"username": "x", "password": PASSWORD, "roles": ["admin"]},
    {"username": "x", "password": PASSWORD, "password_hash": "$argon2id$..."},
    {"username": "x", "password": 12345678},
]


async def test_invalid_users_are_400(site: Site) -> None:
    for body in INVALID_USERS:
        r = await site.call("POST", "/users", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"] == "invalid_request", body
        assert (await site.call("GET", "/users/x")).status_code == 404  # nothing half-written


async def sign_in(site: Site, username: str, password: str) -> httpx.Response:
    browser = Browser(site.http)
    page = await browser.get(ISSUER + "/login?next=/continue")
    return await browser.post(ISSUER + "/login", {
        "csrf": page.text.split('name="csrf" value="')[1].split('"')[0],
        "next": "/continue", "username": username, "password": password})


async def test_disable_and_password_reset_revoke_the_users_tokens(site: Site) -> None:
    client_id, secret = await confidential_app_with_user(site)
    first = (await code_tokens(site, client_id, secret)).json()
    r = await site.call("PATCH", "/users/doc", {"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert not await active(site, first["access_token"])
    refreshed = await site.http.post(TOKEN_URL, auth=(client_id, secret), data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 400
    r = await sign_in(site, "doc", PASSWORD)
    assert r.status_code == 401 and "disabled" in r.text
    await site.call("PATCH", "/users/doc", {"disabled": False})
    second = (await code_tokens(site, client_id, secret)).json()
    r = await site.call("POST", "/users/doc/password", {"password": "a new long passphrase"})
    assert r.status_code == 200 and "password" not in json.dumps(r.json())
    assert not await active(site, second["access_token"])
    assert (await sign_in(site, "doc", PASSWORD)).status_code == 401
    assert (await sign_in(site, "doc", "a new long passphrase")).status_code == 303
    r = await site.call("POST", "/users/doc/password", {"password": "short"})
    assert r.status_code == 400
    r = await site.call("POST", "/users/doc/password", {})
    assert r.status_code == 400


async def test_a_code_issued_before_the_user_was_disabled_is_worthless(site: Site) -> None:
    client_id, secret = await confidential_app_with_user(site)
    callback, verifier = await code_flow(site.env, client_id, APP_SCOPE, user="doc")
    await site.call("PATCH", "/users/doc", {"disabled": True})
    r = await exchange(site.env, client_id, callback["code"], verifier, client_secret=secret)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "disabled" in r.json()["error_description"]


async def test_disabling_or_a_new_password_ends_open_sign_ins(site: Site) -> None:
    client_id, _ = await confidential_app_with_user(site)
    browser = Browser(site.http)
    challenge = pkce()[1]

    async def authorize() -> httpx.Response:
        return await browser.follow(await browser.authorize(client_id, APP_SCOPE,
                                                            challenge=challenge))

    consent = await browser.login(await authorize(), "doc")
    assert 'name="decision"' in (await authorize()).text  # signed in: straight to consent
    await site.call("PATCH", "/users/doc", {"disabled": True})
    await site.call("PATCH", "/users/doc", {"disabled": False})
    r = await browser.consent(consent)  # the page from before: no longer signed in
    assert r.status_code == 400 and "sign in" in r.text
    consent = await browser.login(await authorize(), "doc")
    assert 'name="decision"' in consent.text
    await site.call("POST", "/users/doc/password", {"password": "a new long passphrase"})
    page = await authorize()
    assert 'name="password"' in page.text
    consent = await browser.login(page, "doc", "a new long passphrase")
    assert 'name="decision"' in consent.text
    await site.call("DELETE", "/users/doc")  # another "doc" is someone else
    await site.call("POST", "/users", {"username": "doc", "password": PASSWORD})
    assert 'name="password"' in (await authorize()).text


async def test_password_reset_clears_a_lockout(site: Site) -> None:
    await confidential_app_with_user(site)
    for _ in range(site.env.server.settings.lockout_attempts):
        await sign_in(site, "doc", "wrong password!")
    r = await sign_in(site, "doc", PASSWORD)
    assert r.status_code == 401 and "locked" in r.text
    await site.call("POST", "/users/doc/password", {"password": PASSWORD})
    assert (await sign_in(site, "doc", PASSWORD)).status_code == 303


async def active(site: Site, access_token: str) -> bool:
    r = await site.http.post(ISSUER + "/introspect", auth=(site.admin_id, site.admin_secret),
                             data={"token": access_token})
    assert r.status_code == 200, r.text
    return r.json()["active"]


async def test_concurrent_changes_all_land(site: Site) -> None:
    """Compare-and-swap with retries: simultaneous edits neither fail nor get lost."""
    await site.call("POST", "/users", {"username": "doc", "password": PASSWORD})
    results = await asyncio.gather(
        site.call("PATCH", "/users/doc", {"name": "Dr Doc"}),
        site.call("PATCH", "/users/doc", {"fhirUser": "Practitioner/7"}))
    assert [r.status_code for r in results] == [200, 200]
    final = (await site.call("GET", "/users/doc")).json()
    assert final["name"] == "Dr Doc" and final["fhirUser"] == "Practitioner/7"


async def test_switching_user_mid_flow_does_not_carry_the_admin_scope(site: Site) -> None:
    """The consent page offered fhirpm/admin to an admin; whoever answers it is what
    counts: another (non-admin) user signing in on the same browser does not get it."""
    client_id, secret = await admin_app(site)
    for name, admin in (("boss", True), ("doc", False)):
        await site.call("POST", "/users", {"username": name, "password": PASSWORD,
                                           "fhirUser": f"Practitioner/{name}", "admin": admin})
    browser = Browser(site.http)
    verifier, challenge = pkce()
    page = await browser.follow(await browser.authorize(client_id, "openid fhirpm/admin",
                                                        challenge=challenge))
    consent = await browser.login(page, "boss")
    assert 'value="fhirpm/admin"' in consent.text
    txn = consent.text.split('name="txn" value="')[1].split('"')[0]
    page = await browser.get(ISSUER + "/login?next=/consent%3Ftxn%3D" + txn)
    again = await browser.login(page, "doc")
    r = await browser.consent(again, ["openid", "fhirpm/admin"])
    assert r.status_code == 303, r.text
    code = r.headers["location"].split("code=")[1].split("&")[0]
    r = await exchange(site.env, client_id, code, verifier, client_secret=secret)
    assert r.status_code == 200 and r.json()["scope"] == "openid"


def test_cli_manages_through_the_same_service(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIRPM_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("FHIRPM_AUTH__ARGON2_TIME_COST", "1")
    monkeypatch.setenv("FHIRPM_AUTH__ARGON2_MEMORY_KIB", "64")

    def run(*argv: str, stdin: str = "") -> tuple[int, Any, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out.strip() else None), err

    code, app, _ = run("clients", "add", "--name", "Chart", "--type", "confidential",
                       "--redirect-uri", APP_REDIRECT)
    assert code == 0 and app["admin"] is False and app["client_secret"]
    code, shown, _ = run("clients", "show", app["client_id"])
    assert shown == {k: v for k, v in app.items() if k != "client_secret"}
    code, off, _ = run("clients", "disable", app["client_id"])
    assert code == 0 and off["disabled"] is True
    assert run("clients", "enable", app["client_id"])[1]["disabled"] is False
    code, fresh, _ = run("clients", "secret", app["client_id"])
    assert code == 0 and fresh["client_secret"] not in (None, app["client_secret"])
    code, console, _ = run("clients", "add", "--admin", "--name", "Console",
                           "--redirect-uri", APP_REDIRECT)
    assert console["grant_types"] == ["client_credentials", "authorization_code",
                                      "refresh_token"]
    assert console["scope"].endswith(" fhirpm/admin") and console["client_secret"]
    code, _, err = run("clients", "add", "--name", "x", "--scope", "fhirpm/admin",
                       "--redirect-uri", APP_REDIRECT)
    assert code == 1 and "admin" in err
    assert run("clients", "delete", app["client_id"])[0] == 0
    code, _, err = run("clients", "show", app["client_id"])
    assert code == 1 and "No client" in err

    code, user, _ = run("users", "add", "--username", "boss", "--admin", "--password-stdin",
                        stdin="long enough pw\n")
    assert code == 0 and user["admin"] is True
    assert run("users", "disable", "boss")[1]["disabled"] is True
    assert run("users", "list")[1] == [{**user, "disabled": True}]
    code, _, _ = run("users", "password", "boss", "--password-stdin", stdin="another long pw\n")
    assert code == 0
    assert run("users", "delete", "boss")[0] == 0
    assert run("users", "list")[1] == []
    code, _, err = run("users", "add", "--username", "pat", "--fhir-user", "Patient/1",
                       "--admin", "--password-stdin", stdin="long enough pw\n")
    assert code == 1 and "admin" in err
