"""EHR launch (launch page and programmatic), token verification edge cases, key rotation,
and RFC 7591 registration."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt

from fhirpm.auth.principal import Principal
from fhirpm.errors import FhirError
from tests.auth.conftest import (
    APP_LAUNCH,
    BASE,
    ISSUER,
    PASSWORD,
    TOKEN_URL,
    Browser,
    Env,
    auth_settings,
    exchange,
    hidden,
    make_env,
    pkce,
    query_of,
)

EHR_SCOPE = "launch openid fhirUser user/*.rs patient/*.rs"


async def start_app(browser: Browser, client_id: str, launch_url: str,
                    scope: str = EHR_SCOPE) -> tuple[Any, str]:
    """What an app does at its launch URL: take iss and launch, go authorize."""
    params = query_of(launch_url)
    assert params["iss"] == BASE
    verifier, challenge = pkce()
    r = await browser.authorize(client_id, scope, challenge=challenge, aud=params["iss"],
                                launch=params["launch"])
    return await browser.follow(r), verifier


async def test_ehr_launch_from_the_launch_page(env: Env) -> None:
    await env.server.users.add("doc", PASSWORD, fhir_user="Practitioner/pr1")
    await env.add_patient("p1")
    client_id = await env.public_app()
    browser = Browser(env.http)
    # the EHR user signs in at the launch page, then launches the app for a patient
    login = await browser.follow(await browser.get(
        f"{ISSUER}/launch?client_id={client_id}&patient=p1"))
    form = await browser.login(login, "doc")
    assert 'id="launch"' in form.text
    r = await browser.post(ISSUER + "/launch", {
        "csrf": hidden(form.text, "csrf"), "client_id": client_id, "patient": "p1"})
    assert r.status_code == 303 and r.headers["location"].startswith(APP_LAUNCH + "?")
    consent, verifier = await start_app(browser, client_id, r.headers["location"])
    # same browser, already signed in: straight to consent, no picker
    assert "Patient/p1</strong>" in consent.text
    done = await browser.consent(consent)
    code = query_of(done.headers["location"])["code"]
    body = (await exchange(env, client_id, code, verifier)).json()
    assert body["patient"] == "p1" and body["need_patient_banner"] is False
    assert body["scope"] == EHR_SCOPE
    assert body["smart_style_url"] == ISSUER + "/smart-style.json"
    principal = await env.server.verifier.verify(body["access_token"])
    assert principal.patient == "p1" and principal.sub == "doc"


async def test_ehr_launch_with_encounter_and_another_user(env: Env) -> None:
    await env.server.users.add("doc", PASSWORD, fhir_user="Practitioner/pr1")
    await env.server.users.add("nurse", PASSWORD, fhir_user="Practitioner/pr2")
    await env.add_patient("p1")
    from fhirpm.storage.port import ResourceVersion

    async with env.store.unit_of_work() as uow:
        await uow.put(ResourceVersion("Encounter", "e1", 1, "2024-01-01T00:00:00.000000Z",
                                      "POST", b'{"resourceType":"Encounter","id":"e1"}'),
                      [], expected_version=0)
    client_id = await env.public_app()
    _, url = await env.server.launches.create(client_id, user="doc", patient="p1",
                                              encounter="e1")
    browser = Browser(env.http)
    login, verifier = await start_app(browser, client_id, url,
                                      "launch launch/encounter user/*.rs")
    # a different user signs in than the one the launch was issued for
    denied = await browser.login(login, "nurse")
    assert query_of(denied.headers["location"])["error"] == "access_denied"

    browser = Browser(env.http)
    login, verifier = await start_app(browser, client_id, url,
                                      "launch launch/encounter user/*.rs")
    done = await browser.consent(await browser.login(login, "doc"))
    body = (await exchange(env, client_id, query_of(done.headers["location"])["code"],
                           verifier)).json()
    assert body["encounter"] == "e1" and body["patient"] == "p1"
    assert body["fhirContext"] == [{"reference": "Encounter/e1"}]


async def test_launch_is_bound_to_its_client(env: Env) -> None:
    await env.add_patient("p1")
    client_id = await env.public_app()
    other = await env.public_app()
    _, url = await env.server.launches.create(client_id, patient="p1")
    browser = Browser(env.http)
    r, _ = await start_app(browser, other, url)
    assert query_of(r.headers["location"])["error"] == "invalid_request"


async def test_launch_needs_known_records_and_a_launch_uri(env: Env) -> None:
    client_id = await env.public_app()
    with pytest.raises(FhirError, match="Patient/ghost is not known"):
        await env.server.launches.create(client_id, patient="ghost")
    bare = await env.public_app(launch_uri=None)
    with pytest.raises(FhirError, match="no launch_uri"):
        await env.server.launches.create(bare)


# -- verification -----------------------------------------------------------------------


async def forge(env: Env, **claims: Any) -> str:
    """A token signed with the server's own key, with chosen claims."""
    key = await env.server.keys.signing_key()
    now = int(time.time())
    body = {"iss": ISSUER, "aud": BASE, "sub": "u", "client_id": "c", "jti": "j",
            "exp": now + 60, "iat": now, "scope": "user/*.rs", **claims}
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"},
                      {k: v for k, v in body.items() if v is not None}, key,
                      algorithms=["RS256"])


@pytest.mark.parametrize(("claims", "why"), [
    ({"exp": int(time.time()) - 60}, "expired"),
    ({"iss": "https://other.example/auth"}, "another server"),
    ({"aud": "https://other.example/fhir"}, "another audience"),
    ({"jti": None}, "jti"),
])
async def test_verify_rejects(env: Env, claims: dict[str, Any], why: str) -> None:
    with pytest.raises(FhirError) as info:
        await env.server.verifier.verify(await forge(env, **claims))
    assert info.value.status == 401 and why in info.value.diagnostics
    assert 'error="invalid_token"' in info.value.headers["WWW-Authenticate"]


async def test_verify_header(env: Env) -> None:
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(FhirError) as info:
            await env.server.verifier.verify_header(header)
        assert info.value.status == 401
        assert info.value.headers["WWW-Authenticate"] == 'Bearer realm="fhirpm"'
    principal = await env.server.verifier.verify_header("Bearer " + await forge(env))
    assert isinstance(principal, Principal) and principal.sub == "u"


async def test_key_rotation_keeps_old_tokens_valid_until_the_next(tmp_path: Path) -> None:
    settings = auth_settings(tmp_path)
    async with make_env(settings) as env:
        old_token = await forge(env)
        old_kid = (await env.server.keys.signing_key()).kid
        await env.server.keys.rotate()
        assert (await env.server.keys.signing_key()).kid != old_kid
        assert (await env.server.verifier.verify(old_token)).sub == "u"
        jwks = (await env.http.get("/auth/jwks")).json()
        assert len(jwks["keys"]) == 2
        # another node (a second AuthServer on the same store) sees the rotation
        from fhirpm.auth.server import AuthServer

        node = AuthServer(settings, env.store)
        assert (await node.verifier.verify(await forge(env))).sub == "u"
        await env.server.keys.rotate()
        with pytest.raises(FhirError):
            await env.server.verifier.verify(old_token)


# -- dynamic registration ---------------------------------------------------------------


async def test_registration_is_off_by_default(env: Env) -> None:
    r = await env.http.post("/auth/register", json={"redirect_uris": ["https://a.example/cb"]})
    assert r.status_code == 404


async def test_registration_when_enabled(tmp_path: Path) -> None:
    async with make_env(auth_settings(tmp_path, registration_enabled=True)) as env:
        conf = (await env.http.get("/fhir/.well-known/smart-configuration")).json()
        assert conf["registration_endpoint"] == ISSUER + "/register"
        r = await env.http.post("/auth/register", json={
            "client_name": "Reg App", "redirect_uris": ["https://a.example/cb"],
            "token_endpoint_auth_method": "client_secret_basic"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["client_id"] and body["client_secret"]
        assert "secret_digest" not in body
        # the secret works at the token endpoint (it reaches grant validation)
        t = await env.http.post(TOKEN_URL, data={"grant_type": "authorization_code",
                                                 "code": "x", "redirect_uri": "x"},
                                auth=(body["client_id"], body["client_secret"]))
        assert t.json()["error"] == "invalid_grant"
        for bad in ({"redirect_uris": "https://a.example/cb"},
                    {"redirect_uris": ["ftp://x"]},
                    {"redirect_uris": [], "grant_types": ["client_credentials"]}, []):
            r = await env.http.post("/auth/register", json=bad)
            assert r.status_code == 400 and r.json()["error"].startswith("invalid_")
        junk = await env.http.post("/auth/register", content=b"{not json")
        assert junk.status_code == 400
