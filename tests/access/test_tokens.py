"""401 and 403 shapes (RFC 6750 challenges, OperationOutcomes), the public endpoints, and
the process cache of verified tokens (revocation re-checked after a bounded time)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.api.bearer import Callers
from fhirpm.app import create_app
from fhirpm.auth.tokens import Grant
from fhirpm.config import AuthSettings, Settings
from fhirpm.repository.access import Anonymous
from tests.access.conftest import World
from tests.bearer import bearer, mint, use_shared_key
from tests.conftest import BASE


def _outcome(r: httpx.Response, code: str) -> None:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code


@pytest.mark.parametrize("method, path", [
    ("GET", "Patient/A"), ("GET", "Patient"), ("GET", ""), ("POST", "Patient"),
    ("GET", "_history"), ("GET", "Patient/A/_history/1"), ("DELETE", "Patient/A"),
    ("POST", "Patient/$validate"), ("GET", "Nope/1/2/3/4"), ("PUT", "Patient?name=x")])
async def test_no_token_is_401_with_a_bare_bearer_challenge(world: World, method: str,
                                                            path: str) -> None:
    anonymous = await world.client(None)
    r = await anonymous.request(method, path, json={"resourceType": "Patient"},
                                headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer realm="fhirpm"'
    _outcome(r, "login")


async def test_public_endpoints_need_no_token(world: World) -> None:
    anonymous = await world.client(None)
    assert (await anonymous.get("metadata")).status_code == 200
    assert (await anonymous.get(".well-known/smart-configuration")).status_code == 200
    assert (await anonymous.get("http://testserver/auth/jwks")).status_code == 200
    oidc = await anonymous.get("http://testserver/auth/.well-known/openid-configuration")
    assert oidc.status_code == 200
    # a broken token does not spoil the public ones either
    broken = {"Authorization": "Bearer not-a-jwt"}
    assert (await anonymous.get("metadata", headers=broken)).status_code == 200


async def test_bad_tokens_are_401_invalid_token(world: World, app: FastAPI) -> None:
    anonymous = await world.client(None)
    good = await world.token("user/*.rs")
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for header in ("Bearer not-a-jwt", f"Bearer {tampered}", f"Bearer {good}x",
                   "Bearer " + "a" * 20000):
        r = await anonymous.get("Patient/A", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        _outcome(r, "login")
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer    "):  # not a bearer token
        r = await anonymous.get("Patient/A", headers={"Authorization": header})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="fhirpm"'


async def test_expired_token_is_401(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'x.db'}", base_url=BASE,
                        log_json=False, auth=AuthSettings(access_token_seconds=30))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        server = app.state.auth
        await use_shared_key(server)
        old = Grant(client_id="c", sub="s", scope="user/*.rs")
        signed = await server.tokens._sign(  # a token that expired a minute ago
            {"typ": "at+jwt"}, server.tokens._access_claims(
                old, old.scopes, "jti-old", int(time.time()) - 120, int(time.time()) - 60))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE + "/") as http:
            r = await http.get("Patient", headers=bearer(signed))
    assert r.status_code == 401
    assert "expired" in r.headers["www-authenticate"]


async def test_a_type_not_granted_is_403_insufficient_scope(world: World) -> None:
    only_obs = await world.client("user/Observation.rs")
    for method, path in (("GET", "Patient/A"), ("GET", "Patient"), ("GET", "Condition"),
                         ("DELETE", "Observation/a-lab"), ("GET", "Patient/_history")):
        r = await only_obs.request(method, path)
        assert r.status_code == 403, (method, path, r.text)
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="fhirpm", error="insufficient_scope"')
        assert "scope=" in challenge
        _outcome(r, "forbidden")
    assert (await only_obs.get("Observation/a-lab")).status_code == 200
    # an interaction not granted on a granted type
    write = await only_obs.put("Observation/a-lab", json={"resourceType": "Observation"},
                               headers={"Content-Type": "application/fhir+json"})
    assert write.status_code == 403


async def test_a_revoked_token_stops_working_within_the_recheck_time(world: World,
                                                                    app: FastAPI) -> None:
    """The process cache: verified once, re-checked for revocation every `recheck` s."""
    server = app.state.auth
    token = await mint(server, "user/*.rs")
    now = [1000.0]
    callers = Callers(server.verifier, recheck=5.0, clock=lambda: now[0])
    first = await callers.caller(f"Bearer {token}")
    assert not isinstance(first, Anonymous) and first.scopes.allows("Patient", "read")
    await server.tokens.revoke_grant(first.grant_id)
    now[0] += 4.0
    assert await callers.caller(f"Bearer {token}") is first  # remembered, not re-read
    now[0] += 1.5
    revoked = await callers.caller(f"Bearer {token}")
    assert isinstance(revoked, Anonymous)
    assert 'error="invalid_token"' in revoked.error.headers["WWW-Authenticate"]
    # a process that never saw the token refuses it at once
    fresh = Callers(server.verifier)
    assert isinstance(await fresh.caller(f"Bearer {token}"), Anonymous)


async def test_revoked_token_over_http_with_no_recheck_delay(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'x.db'}", base_url=BASE,
                        log_json=False, auth=AuthSettings(token_recheck_seconds=0))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        server = app.state.auth
        body = await server.tokens.issue(Grant(client_id="c", sub="s", scope="user/*.rs"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE + "/",
                                     headers=bearer(body["access_token"])) as http:
            assert (await http.get("Patient")).status_code == 200
            principal = await server.verifier.verify(body["access_token"])
            await server.tokens.revoke_grant(principal.grant_id)
            r = await http.get("Patient")
    assert r.status_code == 401
    assert "revoked" in r.headers["www-authenticate"]


async def test_authorization_off_serves_everyone(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'x.db'}", base_url=BASE,
                        log_json=False, auth=AuthSettings(enabled=False))
    app = create_app(settings)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url=BASE + "/") as http):
        r = await http.put("Patient/x", json={"resourceType": "Patient", "id": "x"},
                           headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 201
        assert (await http.get("Patient/x")).status_code == 200
