"""SMART Backend Services: client_credentials with private_key_jwt (RS384 and ES384), keys
registered inline or served from a JWKS URL (a real HTTP server on loopback)."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.auth.conftest import TOKEN_URL, Env
from tests.loopback import serving

ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@functools.cache
def client_key(alg: str) -> RSAKey | ECKey:
    """A client's key, shared across tests (each test registers its own client with it)."""
    return make_key(alg)


def make_key(alg: str) -> RSAKey | ECKey:
    if alg == "RS384":
        return RSAKey.generate_key(2048, parameters={"alg": alg}, auto_kid=True)
    return ECKey.generate_key("P-384", parameters={"alg": alg}, auto_kid=True)


def assertion(key: RSAKey | ECKey, client_id: str, *, alg: str | None = None,
              **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 240,
            "jti": str(uuid.uuid4()), **claims}
    body = {k: v for k, v in body.items() if v is not None}
    alg = alg or key.alg
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, body, key, algorithms=[alg])


async def backend(env: Env, key: RSAKey | ECKey, **spec: Any) -> str:
    registration: dict[str, Any] = {"jwks": {"keys": [key.as_dict(private=False)]}}
    registration.update(spec)
    client, secret = await env.server.clients.add(
        name="EHR backend", auth_method="private_key_jwt", grant_types=["client_credentials"],
        **registration)
    assert secret is None
    return client.client_id


async def token(env: Env, signed: str, scope: str = "system/*.rs",
                assertion_type: str = ASSERTION):
    return await env.http.post(TOKEN_URL, data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": assertion_type, "client_assertion": signed})


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_backend_services_token(env: Env, alg: str) -> None:
    key = client_key(alg)
    client_id = await backend(env, key)
    r = await token(env, assertion(key, client_id), "system/Patient.rs system/*.rs openid")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and isinstance(body["expires_in"], int)
    assert body["scope"] == "system/Patient.rs system/*.rs"  # only system/ scopes
    assert "refresh_token" not in body and "id_token" not in body and "patient" not in body
    principal = await env.server.verifier.verify(body["access_token"])
    assert principal.is_backend and principal.client_id == client_id
    assert principal.allows("Observation", "search") and not principal.allows(
        "Observation", "create")


async def test_replayed_jti_is_refused(env: Env) -> None:
    key = make_key("ES384")
    client_id = await backend(env, key)
    signed = assertion(key, client_id)
    assert (await token(env, signed)).status_code == 200
    again = await token(env, signed)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    assert "jti" in again.json()["error_description"]


@pytest.mark.parametrize(("claims", "why"), [
    ({"iss": "not_a_valid_iss"}, "unknown client"),
    ({"sub": "someone-else"}, "sub"),
    ({"aud": "https://elsewhere.example/token"}, "aud"),
    ({"exp": int(time.time()) + 3600}, "ahead"),
    ({"exp": int(time.time()) - 600}, "expired"),
    ({"exp": None}, "exp"),
    ({"jti": None}, "jti"),
])
async def test_bad_assertion_claims(env: Env, claims: dict[str, Any], why: str) -> None:
    key = client_key("RS384")
    client_id = await backend(env, key)
    r = await token(env, assertion(key, client_id, **claims))
    assert r.status_code in (400, 401), r.text
    assert r.json()["error"] == "invalid_client"
    assert why in r.json()["error_description"]


async def test_wrong_key_and_wrong_algorithm(env: Env) -> None:
    key = client_key("RS384")
    client_id = await backend(env, key)
    stranger = RSAKey.generate_key(2048, parameters={"alg": "RS384", "kid": key.kid})
    forged = await token(env, assertion(stranger, client_id))
    assert forged.status_code == 401 and "signature" in forged.json()["error_description"]
    no_alg = RSAKey.import_key({k: v for k, v in key.as_dict(private=True).items()
                                if k != "alg"})
    rs256 = await token(env, assertion(no_alg, client_id, alg="RS256"))
    assert rs256.status_code == 401 and "signed with" in rs256.json()["error_description"]


@pytest.mark.parametrize("assertion_type", ["not_an_assertion_type", ""])
async def test_bad_assertion_type(env: Env, assertion_type: str) -> None:
    key = make_key("ES384")
    client_id = await backend(env, key)
    r = await token(env, assertion(key, client_id), assertion_type=assertion_type)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_not_a_jwt(env: Env) -> None:
    r = await token(env, "garbage")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_only_registered_system_scopes(env: Env) -> None:
    key = client_key("ES384")
    client_id = await backend(env, key, scope="system/Patient.rs")
    narrow = await token(env, assertion(key, client_id), "system/*.rs system/Patient.r")
    assert narrow.json()["scope"] == "system/Patient.r"
    none = await token(env, assertion(key, client_id), "system/Observation.rs")
    assert none.status_code == 400 and none.json()["error"] == "invalid_scope"
    user = await token(env, assertion(key, client_id), "user/*.rs")
    assert user.status_code == 400 and user.json()["error"] == "invalid_scope"


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A JWKS URL on loopback whose content the test controls (and which counts fetches)."""
    served: dict[str, Any] = {"keys": [], "fetches": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served["fetches"] += 1
            body = orjson.dumps({"keys": served["keys"]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield f"{url}/jwks.json", served


async def test_keys_from_a_jwks_url_with_rotation(env: Env,
                                                  jwks_server: tuple[str, dict]) -> None:
    url, served = jwks_server
    first = make_key("ES384")
    served["keys"] = [first.as_dict(private=False)]
    client_id = await backend(env, first, jwks=None, jwks_uri=url)
    assert (await token(env, assertion(first, client_id))).status_code == 200
    assert (await token(env, assertion(first, client_id))).status_code == 200
    assert served["fetches"] == 1  # cached
    # the client rotates its key: an unknown kid makes us fetch again
    second = make_key("RS384")
    served["keys"] = [first.as_dict(private=False), second.as_dict(private=False)]
    assert (await token(env, assertion(second, client_id))).status_code == 200
    assert served["fetches"] == 2


async def test_jku_must_be_the_registered_jwks_url(env: Env,
                                                   jwks_server: tuple[str, dict]) -> None:
    url, served = jwks_server
    key = make_key("ES384")
    served["keys"] = [key.as_dict(private=False)]
    client_id = await backend(env, key, jwks=None, jwks_uri=url)
    now = int(time.time())
    signed = jwt.encode({"alg": "ES384", "kid": key.kid, "jku": "https://evil.example/jwks"},
                        {"iss": client_id, "sub": client_id, "aud": TOKEN_URL,
                         "exp": now + 60, "jti": "j1"}, key, algorithms=["ES384"])
    r = await token(env, signed)
    assert r.status_code == 401 and "jku" in r.json()["error_description"]


async def test_unreachable_jwks_url(env: Env) -> None:
    key = make_key("ES384")
    client_id = await backend(env, key, jwks=None, jwks_uri="http://127.0.0.1:9/jwks.json")
    r = await token(env, assertion(key, client_id))
    assert r.status_code == 401 and "jwks_uri" in r.json()["error_description"]
