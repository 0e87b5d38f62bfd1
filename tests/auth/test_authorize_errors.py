"""Every rule of the authorization endpoint, broken once: no code ever reaches the app, and
nothing redirects to an unregistered place."""

from __future__ import annotations

import pytest

from tests.auth.conftest import APP_REDIRECT, ISSUER, Browser, Env, pkce, query_of


@pytest.fixture
async def app_id(env: Env) -> str:
    await env.server.users.add("pat", "correct horse battery", fhir_user="Patient/p7")
    return await env.public_app()


def assert_error_redirect(r, error: str, state: str | None = "st-1") -> dict[str, str]:
    assert r.status_code in (302, 303), r.text
    location = r.headers["location"]
    assert location.startswith(APP_REDIRECT + "?")
    params = query_of(location)
    assert params["error"] == error and "code" not in params
    assert params.get("state") == state
    return params


async def test_unknown_client_shows_a_page_and_never_redirects(env: Env) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize("no-such-client", "patient/*.rs", challenge=challenge)
    assert r.status_code == 400 and "location" not in r.headers
    assert "not registered" in r.text
    assert r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("redirect", [
    "https://evil.example.org/callback", APP_REDIRECT + "/extra", APP_REDIRECT + "?x=1",
    "https://app.example.org/CALLBACK", None])
async def test_unregistered_redirect_uri_shows_a_page(env: Env, app_id: str,
                                                      redirect: str | None) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize(app_id, "patient/*.rs", challenge=challenge,
                                          redirect_uri=redirect)  # type: ignore[arg-type]
    assert r.status_code == 400 and "location" not in r.headers
    assert "redirect_uri" in r.text


async def test_wrong_aud_never_yields_a_code(env: Env, app_id: str) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize(app_id, "patient/*.rs", challenge=challenge,
                                          aud="https://inferno.healthit.gov/invalid_aud")
    assert "aud" in assert_error_redirect(r, "invalid_request")["error_description"]


async def test_missing_aud_is_refused(env: Env, app_id: str) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize(app_id, "patient/*.rs", challenge=challenge,
                                          aud=None)  # type: ignore[arg-type]
    assert_error_redirect(r, "invalid_request")


async def test_aud_with_trailing_slash_is_the_same_base(env: Env, app_id: str) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize(app_id, "patient/*.rs", challenge=challenge,
                                          aud="http://testserver/fhir/")
    assert r.headers["location"].startswith(ISSUER + "/login")


@pytest.mark.parametrize(("challenge", "method"), [
    (None, None),  # no PKCE at all
    ("x" * 43, None),  # no method: RFC 7636 would default to plain
    ("x" * 43, "plain"),
    ("short", "S256"),
    ("", "S256"),
])
async def test_pkce_s256_is_mandatory(env: Env, app_id: str, challenge: str | None,
                                      method: str | None) -> None:
    browser = Browser(env.http)
    r = await browser.authorize(app_id, "patient/*.rs", challenge=challenge,  # type: ignore[arg-type]
                                code_challenge_method=method)  # type: ignore[arg-type]
    assert "PKCE" in assert_error_redirect(r, "invalid_request")["error_description"]


async def test_response_type_must_be_code(env: Env, app_id: str) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize(app_id, "patient/*.rs", challenge=challenge,
                                          response_type="token")
    assert_error_redirect(r, "unsupported_response_type")


async def test_state_is_required(env: Env, app_id: str) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize(app_id, "patient/*.rs", challenge=challenge,
                                          state=None)  # type: ignore[arg-type]
    assert_error_redirect(r, "invalid_request", state=None)


async def test_state_is_echoed_byte_for_byte(env: Env, app_id: str) -> None:
    _, challenge = pkce()
    odd = "a b&c=d/é?%"
    r = await Browser(env.http).authorize(app_id, "patient/*.rs", challenge=challenge,
                                          state=odd, aud="https://elsewhere.example/fhir")
    assert_error_redirect(r, "invalid_request", state=odd)


async def test_nothing_grantable_is_invalid_scope(env: Env, app_id: str) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize(app_id, "system/*.rs bogus", challenge=challenge)
    assert_error_redirect(r, "invalid_scope")


async def test_unknown_launch_is_refused(env: Env, app_id: str) -> None:
    _, challenge = pkce()
    r = await Browser(env.http).authorize(app_id, "launch patient/*.rs", challenge=challenge,
                                          launch="not-a-launch")
    assert_error_redirect(r, "invalid_request")


async def test_repeated_parameter_is_an_error_page(env: Env, app_id: str) -> None:
    r = await env.http.get(f"/auth/authorize?client_id={app_id}&client_id={app_id}")
    assert r.status_code == 400 and "location" not in r.headers


async def test_backend_only_client_may_not_use_the_code_grant(env: Env) -> None:
    from fhirpm.auth.clients import Client
    from fhirpm.auth.records import CLIENTS

    # a client registered with a redirect URI but without the authorization_code grant
    client = Client(client_id="cc-only", name="x", auth_method="none",
                    redirect_uris=(APP_REDIRECT,), grant_types=("refresh_token",))
    await env.server.docs.put(CLIENTS, client.client_id, client.record())
    _, challenge = pkce()
    r = await Browser(env.http).authorize("cc-only", "patient/*.rs", challenge=challenge)
    assert_error_redirect(r, "unauthorized_client")


async def test_user_denies(env: Env, app_id: str) -> None:
    browser = Browser(env.http)
    _, challenge = pkce()
    r = await browser.follow(await browser.authorize(app_id, "patient/*.rs",
                                                     challenge=challenge))
    r = await browser.consent(await browser.login(r, "pat"), decision="deny")
    assert_error_redirect(r, "access_denied")


async def test_unticking_everything_is_a_denial(env: Env, app_id: str) -> None:
    browser = Browser(env.http)
    _, challenge = pkce()
    r = await browser.follow(await browser.authorize(app_id, "patient/*.rs",
                                                     challenge=challenge))
    r = await browser.consent(await browser.login(r, "pat"), scopes=[])
    assert_error_redirect(r, "access_denied")


async def test_scopes_not_offered_cannot_be_smuggled_in_at_consent(env: Env,
                                                                   app_id: str) -> None:
    from tests.auth.conftest import exchange

    browser = Browser(env.http)
    verifier, challenge = pkce()
    r = await browser.follow(await browser.authorize(app_id, "patient/Patient.rs",
                                                     challenge=challenge))
    r = await browser.consent(await browser.login(r, "pat"),
                              scopes=["patient/Patient.rs", "user/*.cruds"])
    code = query_of(r.headers["location"])["code"]
    body = (await exchange(env, app_id, code, verifier)).json()
    assert body["scope"] == "patient/Patient.rs"
