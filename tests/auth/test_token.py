"""The token endpoint's rules: code binding and single use, PKCE verifiers, client
authentication, refresh rotation and narrowing, revocation and introspection."""

from __future__ import annotations

import base64

import pytest

from tests.auth.conftest import APP_REDIRECT, TOKEN_URL, Env, code_flow, exchange

SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


@pytest.fixture
async def app_id(env: Env) -> str:
    await env.server.users.add("pat", "correct horse battery", fhir_user="Patient/p7")
    return await env.public_app()


async def tokens_for(env: Env, app_id: str, scope: str = SCOPE) -> dict:
    callback, verifier = await code_flow(env, app_id, scope, user="pat")
    r = await exchange(env, app_id, callback["code"], verifier)
    assert r.status_code == 200, r.text
    return r.json()


async def refresh(env: Env, app_id: str, token: str, scope: str | None = None):
    data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": app_id}
    if scope is not None:
        data["scope"] = scope
    return await env.http.post(TOKEN_URL, data=data)


async def active(env: Env, token: str) -> bool:
    """Resource-server view: does the token still verify?"""
    from fhirpm.errors import FhirError

    try:
        await env.server.verifier.verify(token)
    except FhirError as err:
        assert err.status == 401
        assert 'error="invalid_token"' in err.headers["WWW-Authenticate"]
        return False
    return True


# -- authorization_code -------------------------------------------------------------------


async def test_code_is_single_use_and_reuse_revokes(env: Env, app_id: str) -> None:
    callback, verifier = await code_flow(env, app_id, SCOPE, user="pat")
    first = await exchange(env, app_id, callback["code"], verifier)
    assert first.status_code == 200
    again = await exchange(env, app_id, callback["code"], verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    body = first.json()
    assert not await active(env, body["access_token"])
    assert (await refresh(env, app_id, body["refresh_token"])).status_code == 400


@pytest.mark.parametrize("verifier", ["", None, "random-" + "x" * 50, "CHALLENGE"])
async def test_bad_pkce_verifiers(env: Env, app_id: str, verifier: str | None) -> None:
    from tests.auth.conftest import Browser, pkce, query_of

    browser = Browser(env.http)
    good, challenge = pkce()
    r = await browser.follow(await browser.authorize(app_id, "patient/*.rs",
                                                     challenge=challenge))
    r = await browser.consent(await browser.login(r, "pat"))
    code = query_of(r.headers["location"])["code"]
    sent = challenge if verifier == "CHALLENGE" else verifier
    bad = await exchange(env, app_id, code, sent)  # type: ignore[arg-type]
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    # a failed verifier does not burn the code for its rightful owner
    assert (await exchange(env, app_id, code, good)).status_code == 200


async def test_bad_code(env: Env, app_id: str) -> None:
    r = await exchange(env, app_id, "BAD_CODE", "v" * 43)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_code_is_bound_to_redirect_uri_and_client(env: Env, app_id: str) -> None:
    other = await env.public_app(redirect_uris=[APP_REDIRECT])
    callback, verifier = await code_flow(env, app_id, SCOPE, user="pat")
    wrong_uri = await exchange(env, app_id, callback["code"], verifier,
                               redirect_uri=APP_REDIRECT + "x")
    assert wrong_uri.status_code == 400 and wrong_uri.json()["error"] == "invalid_grant"
    wrong_client = await exchange(env, other, callback["code"], verifier)
    assert wrong_client.status_code == 400 and wrong_client.json()["error"] == "invalid_grant"
    assert (await exchange(env, app_id, callback["code"], verifier)).status_code == 200


async def test_bad_client_id(env: Env, app_id: str) -> None:
    callback, verifier = await code_flow(env, app_id, SCOPE, user="pat")
    r = await exchange(env, "BAD_CLIENT_ID", callback["code"], verifier)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_wrong_basic_secret(env: Env) -> None:
    client_id, secret = await env.confidential_app()
    r = await env.http.post(TOKEN_URL, data={"grant_type": "authorization_code",
                                             "code": "x", "redirect_uri": APP_REDIRECT},
                            auth=(client_id, secret + "x"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")
    garbage = await env.http.post(TOKEN_URL, data={"grant_type": "authorization_code"},
                                  headers={"Authorization": "Basic %%%"})
    assert garbage.status_code == 401


@pytest.mark.parametrize("grant_type", ["not_a_grant_type", "password", "implicit", ""])
async def test_bad_grant_type(env: Env, app_id: str, grant_type: str) -> None:
    r = await env.http.post(TOKEN_URL, data={"grant_type": grant_type, "client_id": app_id})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


async def test_public_client_may_not_use_client_credentials(env: Env, app_id: str) -> None:
    r = await env.http.post(TOKEN_URL, data={"grant_type": "client_credentials",
                                             "client_id": app_id, "scope": "system/*.rs"})
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


async def test_token_endpoint_wants_a_form(env: Env) -> None:
    r = await env.http.post(TOKEN_URL, json={"grant_type": "authorization_code"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    dup = await env.http.post(TOKEN_URL, content="grant_type=a&grant_type=b",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert dup.status_code == 400 and dup.json()["error"] == "invalid_request"


# -- refresh ------------------------------------------------------------------------------


async def test_refresh_tokens_only_with_offline_or_online_access(env: Env,
                                                                 app_id: str) -> None:
    assert "refresh_token" not in await tokens_for(env, app_id, "patient/*.rs")
    online = await tokens_for(env, app_id, "online_access patient/*.rs")
    assert online["refresh_token"]


async def test_refresh_rotates_and_old_token_reuse_revokes_the_grant(env: Env,
                                                                     app_id: str) -> None:
    first = await tokens_for(env, app_id)
    r = await refresh(env, app_id, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == SCOPE and second["patient"] == "p7"
    assert await active(env, second["access_token"])
    # the rotated-out token comes back: treat as stolen, revoke everything
    replay = await refresh(env, app_id, first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert not await active(env, second["access_token"])
    assert not await active(env, first["access_token"])
    assert (await refresh(env, app_id, second["refresh_token"])).status_code == 400


async def test_refresh_may_narrow_never_widen(env: Env, app_id: str) -> None:
    first = await tokens_for(env, app_id)
    narrow = await refresh(env, app_id, first["refresh_token"],
                           "offline_access patient/Observation.rs")
    assert narrow.status_code == 200, narrow.text
    body = narrow.json()
    assert body["scope"] == "offline_access patient/Observation.rs"
    principal = await env.server.verifier.verify(body["access_token"])
    assert principal.allows("Observation", "read") and not principal.allows("Condition",
                                                                            "read")
    # the grant itself keeps its scope: a later refresh may ask for all of it again
    # (a blank scope parameter counts as omitted)
    again = await refresh(env, app_id, body["refresh_token"], "")
    assert again.json()["scope"] == SCOPE
    wider = await refresh(env, app_id, again.json()["refresh_token"],
                          "offline_access patient/*.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


async def test_refresh_by_another_client_or_random_token(env: Env, app_id: str) -> None:
    first = await tokens_for(env, app_id)
    other = await env.public_app()
    stolen = await refresh(env, other, first["refresh_token"])
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    random = await refresh(env, app_id, "rt.0b3c5e0e-5d2c-4e0b-9d7e-2b0f2f4ad6c1")
    assert random.status_code == 400 and random.json()["error"] == "invalid_grant"


# -- revocation and introspection ----------------------------------------------------------


async def test_revoking_the_access_token_kills_the_refresh_token(env: Env,
                                                                 app_id: str) -> None:
    body = await tokens_for(env, app_id)
    r = await env.http.post("/auth/revoke", data={"token": body["access_token"],
                                                  "client_id": app_id})
    assert r.status_code == 200
    assert not await active(env, body["access_token"])
    assert (await refresh(env, app_id, body["refresh_token"])).status_code == 400


async def test_revoking_the_refresh_token_kills_the_access_token(env: Env,
                                                                 app_id: str) -> None:
    body = await tokens_for(env, app_id)
    r = await env.http.post("/auth/revoke", data={"token": body["refresh_token"],
                                                  "token_type_hint": "refresh_token",
                                                  "client_id": app_id})
    assert r.status_code == 200
    assert not await active(env, body["access_token"])


async def test_revocation_rules(env: Env, app_id: str) -> None:
    body = await tokens_for(env, app_id)
    other = await env.public_app()
    theft = await env.http.post("/auth/revoke", data={"token": body["access_token"],
                                                      "client_id": other})
    assert theft.status_code == 400 and theft.json()["error"] == "unauthorized_client"
    assert await active(env, body["access_token"])
    unknown = await env.http.post("/auth/revoke", data={"token": "nonsense",
                                                        "client_id": app_id})
    assert unknown.status_code == 200  # RFC 7009: unknown tokens are not an error
    missing = await env.http.post("/auth/revoke", data={"client_id": app_id})
    assert missing.status_code == 400


async def test_introspection(env: Env, app_id: str) -> None:
    body = await tokens_for(env, app_id)
    rs_id, rs_secret = await env.confidential_app()
    r = await env.http.post("/auth/introspect", data={"token": body["access_token"]},
                            auth=(rs_id, rs_secret))
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["active"] is True
    assert info["scope"] == SCOPE and info["client_id"] == app_id
    assert info["sub"] == "pat" and info["fhirUser"] == "Patient/p7"
    assert info["patient"] == "p7" and isinstance(info["exp"], int)
    # with a bearer token instead of client credentials
    own = await env.http.post("/auth/introspect", data={"token": body["refresh_token"]},
                              headers={"Authorization": "Bearer " + body["access_token"]})
    assert own.json()["active"] is True and own.json()["patient"] == "p7"
    # a public client cannot introspect
    public = await env.http.post("/auth/introspect", data={"token": body["access_token"],
                                                           "client_id": app_id})
    assert public.status_code == 401
    # after revocation: inactive
    await env.http.post("/auth/revoke", data={"token": body["access_token"],
                                              "client_id": app_id})
    gone = await env.http.post("/auth/introspect", data={"token": body["access_token"]},
                               auth=(rs_id, rs_secret))
    assert gone.json() == {"active": False}
    junk = await env.http.post("/auth/introspect", data={"token": "junk"},
                               auth=(rs_id, rs_secret))
    assert junk.json() == {"active": False}


async def test_tampered_and_foreign_tokens_do_not_verify(env: Env, app_id: str) -> None:
    body = await tokens_for(env, app_id)
    header, payload, signature = body["access_token"].split(".")
    claims = base64.urlsafe_b64decode(payload + "==").replace(b'"pat"', b'"adm"')
    forged = ".".join([header, base64.urlsafe_b64encode(claims).rstrip(b"=").decode(),
                       signature])
    assert not await active(env, forged)
    # the id_token is signed by the same key but is not an access token
    assert not await active(env, body["id_token"])
    assert not await active(env, "not.a.jwt")
