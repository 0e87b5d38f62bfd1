"""Standalone launch end to end over HTTP: discovery, authorize, login, patient picker,
consent, code exchange, id_token, verification into a Principal."""

from __future__ import annotations

import time

from joserfc import jwt
from joserfc.jwk import KeySet

from fhirpm.auth.discovery import CAPABILITIES
from tests.auth.conftest import (
    APP_REDIRECT,
    BASE,
    ISSUER,
    TOKEN_URL,
    Browser,
    Env,
    code_flow,
    exchange,
    pkce,
    query_of,
)

SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


async def test_smart_configuration(env: Env) -> None:
    r = await env.http.get("/fhir/.well-known/smart-configuration",
                           headers={"Origin": "https://app.example.org"})
    assert r.status_code == 200
    conf = r.json()
    assert conf["authorization_endpoint"] == ISSUER + "/authorize"
    assert conf["token_endpoint"] == TOKEN_URL
    assert conf["issuer"] == ISSUER and conf["jwks_uri"] == ISSUER + "/jwks"
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(
        conf["grant_types_supported"])
    assert set(conf["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "private_key_jwt", "none"}
    assert set(conf["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert set(conf["capabilities"]) == set(CAPABILITIES)
    assert "registration_endpoint" not in conf  # off by default
    assert r.headers["access-control-allow-origin"] == "*"


async def test_openid_configuration_and_jwks(env: Env) -> None:
    conf = (await env.http.get("/auth/.well-known/openid-configuration")).json()
    assert conf["issuer"] == ISSUER
    assert conf["id_token_signing_alg_values_supported"] == ["RS256"]
    jwks = (await env.http.get(conf["jwks_uri"].removeprefix("http://testserver"))).json()
    assert len(jwks["keys"]) == 1
    assert "d" not in jwks["keys"][0]  # never the private part
    style = await env.http.get("/auth/smart-style.json")
    assert style.status_code == 200 and "color_background" in style.json()


async def test_cors_preflight_on_token_endpoint(env: Env) -> None:
    r = await env.http.options("/auth/token", headers={
        "Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]


async def test_practitioner_picks_patient_and_gets_tokens(env: Env) -> None:
    await env.server.users.add("doc", "correct horse battery",
                               fhir_user="Practitioner/pr1")
    await env.add_patient("p1", "Alpha")
    await env.add_patient("p2", "Beta")
    client_id = await env.public_app()
    callback, verifier = await code_flow(env, client_id, SCOPE, patient="p2",
                                         extra={"nonce": "n-1"})
    assert callback["state"] == "st-1"
    r = await exchange(env, client_id, callback["code"], verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
    body = r.json()
    assert body["token_type"] == "Bearer" and isinstance(body["expires_in"], int)
    assert body["scope"] == SCOPE
    assert body["patient"] == "p2"
    assert body["need_patient_banner"] is True
    assert body["smart_style_url"] == ISSUER + "/smart-style.json"
    assert body["refresh_token"]

    keys = KeySet.import_key_set((await env.http.get("/auth/jwks")).json())
    id_token = jwt.decode(body["id_token"], keys, algorithms=["RS256"])
    assert id_token.header["alg"] == "RS256"
    claims = id_token.claims
    assert claims["iss"] == ISSUER and claims["aud"] == client_id and claims["sub"] == "doc"
    assert claims["fhirUser"] == BASE + "/Practitioner/pr1"
    assert claims["nonce"] == "n-1"
    assert claims["iat"] <= time.time() < claims["exp"]

    principal = await env.server.verifier.verify_header("Bearer " + body["access_token"])
    assert (principal.sub, principal.client_id, principal.patient) == ("doc", client_id, "p2")
    assert principal.fhir_user == "Practitioner/pr1"
    assert principal.allows("Observation", "search") and not principal.allows(
        "Observation", "create")
    access = principal.access("Observation", "read")
    assert access.patient is not None and access.unbounded is None


async def test_patient_user_is_bound_to_own_record(env: Env) -> None:
    await env.server.users.add("pat", "correct horse battery", fhir_user="Patient/p7")
    client_id = await env.public_app()
    callback, verifier = await code_flow(env, client_id, SCOPE, user="pat")
    body = (await exchange(env, client_id, callback["code"], verifier)).json()
    assert body["patient"] == "p7"
    principal = await env.server.verifier.verify(body["access_token"])
    assert principal.patient == "p7" and principal.fhir_user == "Patient/p7"


async def test_consent_grants_a_subset(env: Env) -> None:
    await env.server.users.add("pat", "correct horse battery", fhir_user="Patient/p7")
    client_id = await env.public_app()
    scope = "launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs " \
            "patient/Condition.rs"
    callback, verifier = await code_flow(
        env, client_id, scope, user="pat",
        granted=["launch/patient", "patient/Patient.rs", "patient/Condition.rs"])
    body = (await exchange(env, client_id, callback["code"], verifier)).json()
    assert body["scope"] == "launch/patient patient/Patient.rs patient/Condition.rs"
    assert "refresh_token" not in body  # no offline_access/online_access requested
    assert "id_token" not in body  # openid was not granted
    principal = await env.server.verifier.verify(body["access_token"])
    assert principal.allows("Condition", "read")
    assert not principal.allows("Observation", "read")


async def test_scopes_beyond_the_client_registration_are_not_offered(env: Env) -> None:
    await env.server.users.add("pat", "correct horse battery", fhir_user="Patient/p7")
    client_id = await env.public_app(scope="launch/patient patient/Observation.rs")
    callback, verifier = await code_flow(
        env, client_id, "launch/patient patient/*.cruds patient/Observation.rs system/*.rs",
        user="pat")
    body = (await exchange(env, client_id, callback["code"], verifier)).json()
    assert body["scope"] == "launch/patient patient/Observation.rs"


async def test_authorize_by_form_post(env: Env) -> None:
    await env.server.users.add("pat", "correct horse battery", fhir_user="Patient/p7")
    client_id = await env.public_app()
    browser = Browser(env.http)
    verifier, challenge = pkce()
    r = await browser.authorize(client_id, "patient/*.rs", challenge=challenge, method="POST")
    assert r.status_code == 303
    r = await browser.consent(await browser.login(await browser.follow(r), "pat"))
    callback = query_of(r.headers["location"])
    assert callback["state"] == "st-1"
    assert (await exchange(env, client_id, callback["code"], verifier)).status_code == 200


async def test_confidential_client_with_basic_auth(env: Env) -> None:
    await env.server.users.add("pat", "correct horse battery", fhir_user="Patient/p7")
    client_id, secret = await env.confidential_app()
    callback, verifier = await code_flow(env, client_id, "patient/*.rs", user="pat")
    # without its secret, a confidential client is refused
    bare = await exchange(env, client_id, callback["code"], verifier)
    assert bare.status_code == 401 and bare.json()["error"] == "invalid_client"
    r = await env.http.post(TOKEN_URL, auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": callback["code"],
        "redirect_uri": APP_REDIRECT, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    assert r.json()["patient"] == "p7"
