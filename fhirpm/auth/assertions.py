"""private_key_jwt client assertions (RFC 7523 as profiled by SMART Backend Services).

The client signs a JWT with its private key (RS384 or ES384, which joserfc refuses unless
allowed explicitly); we check it with the public keys it registered (a JWKS, or a JWKS URL
fetched with a short cache): `iss` = `sub` = client_id, `aud` = our token URL, `exp` in
the future but at most a few minutes ahead, and a `jti` never seen before (a replay cache
in the store, kept until the assertion expires, shared by every node).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhirpm.auth.clients import Client
from fhirpm.auth.errors import invalid_client, invalid_request
from fhirpm.auth.records import JTIS, AuthDocs

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
_KTY = {"RS": "RSA", "ES": "EC"}
_CACHE_SECONDS = 300
_LEEWAY = 30  # clock skew tolerated on exp/nbf/iat


def unverified_claims(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) before verification: only to find which client it claims to be."""
    try:
        obj = jws.extract_compact(assertion.encode())
        claims = orjson.loads(obj.payload)
    except (JoseError, ValueError, orjson.JSONDecodeError) as exc:
        raise invalid_client(f"client_assertion is not a JWT: {exc}") from None
    if not isinstance(claims, dict):
        raise invalid_client("client_assertion claims are not a JSON object")
    return dict(obj.headers()), claims


class ClientKeys:
    """A client's public keys: registered inline, or fetched from its jwks_uri (cached)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def keys(self, client: Client, kid: str | None) -> KeySet:
        if client.jwks is not None:
            return _keyset(client.jwks)
        if not client.jwks_uri:
            raise invalid_client("this client has no keys registered")
        cached = self._cache.get(client.jwks_uri)
        fresh = cached is not None and cached[0] > time.monotonic()
        if not fresh or (kid is not None and not _has_kid(cached[1], kid)):  # type: ignore[index]
            cached = (time.monotonic() + _CACHE_SECONDS, await self._fetch(client.jwks_uri))
            self._cache[client.jwks_uri] = cached
        return _keyset(cached[1])

    async def _fetch(self, uri: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                answer = await http.get(uri, headers={"Accept": "application/json"})
            answer.raise_for_status()
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise invalid_client(f"could not fetch the client's jwks_uri: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
            raise invalid_client("the client's jwks_uri did not return a JWKS")
        return body


def _has_kid(jwks: dict[str, Any], kid: str) -> bool:
    return any(isinstance(k, dict) and k.get("kid") == kid for k in jwks.get("keys", []))


def _keyset(jwks: dict[str, Any]) -> KeySet:
    usable = []
    for key in jwks.get("keys", []):
        try:
            usable.append(KeySet.import_key_set({"keys": [key]}).keys[0])  # type: ignore[list-item]
        except (JoseError, ValueError, TypeError, KeyError):
            continue  # a key we cannot use does not spoil the others
    return KeySet(usable)


def _candidates(keyset: KeySet, header: dict[str, Any]) -> list[RSAKey | ECKey]:
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise invalid_client(f"client_assertion must be signed with one of {ALGORITHMS}")
    kty = _KTY[alg[:2]]
    kid = header.get("kid")
    return [k for k in keyset.keys  # type: ignore[misc]
            if k.key_type == kty and (kid is None or k.kid == kid)]


class AssertionVerifier:
    def __init__(self, docs: AuthDocs, keys: ClientKeys, max_seconds: int) -> None:
        self.docs = docs
        self.keys = keys
        self.max_seconds = max_seconds

    async def verify(self, client: Client, assertion: str, token_url: str) -> None:
        """Raise OAuthError unless `assertion` authenticates `client` at `token_url`."""
        header, _ = unverified_claims(assertion)
        if header.get("jku") is not None and header["jku"] != client.jwks_uri:
            raise invalid_client("jku does not match the client's registered jwks_uri")
        keyset = await self.keys.keys(client, header.get("kid"))
        claims = _verify_signature(assertion, _candidates(keyset, header))
        now = int(time.time())
        _check_claims(claims, client.client_id, token_url, now, self.max_seconds)
        jti = str(claims["jti"])
        if len(jti) > 256:
            raise invalid_client("jti is too long")
        fresh = await self.docs.create(JTIS, f"{client.client_id}:{jti}", {"exp": claims["exp"]},
                                       expires_at=int(claims["exp"]) + _LEEWAY)
        if not fresh:
            raise invalid_client("this client_assertion (jti) was already used")


def _verify_signature(assertion: str, keys: list[RSAKey | ECKey]) -> dict[str, Any]:
    if not keys:
        raise invalid_client("no registered key matches the client_assertion's kid and alg")
    for key in keys:
        try:
            return dict(jwt.decode(assertion, key, algorithms=list(ALGORITHMS)).claims)
        except JoseError:
            continue
    raise invalid_client("client_assertion signature does not verify")


def _check_claims(claims: dict[str, Any], client_id: str, token_url: str, now: int,
                  max_seconds: int) -> None:
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise invalid_client("client_assertion iss and sub must both be the client_id")
    aud = claims.get("aud")
    if not (aud == token_url or (isinstance(aud, list) and token_url in aud)):
        raise invalid_client(f"client_assertion aud must be the token URL {token_url}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise invalid_client("client_assertion needs a numeric exp")
    if exp <= now - _LEEWAY:
        raise invalid_client("client_assertion has expired")
    if exp > now + max_seconds + _LEEWAY:
        raise invalid_client(f"client_assertion exp is more than {max_seconds} s ahead")
    nbf = claims.get("nbf")
    if isinstance(nbf, int) and nbf > now + _LEEWAY:
        raise invalid_client("client_assertion is not valid yet (nbf)")
    if not claims.get("jti"):
        raise invalid_client("client_assertion needs a jti")


def check_assertion_type(value: str | None) -> None:
    """400 invalid_request for a missing or unknown assertion type (what Inferno expects)."""
    if value != ASSERTION_TYPE:
        raise invalid_request(f"client_assertion_type must be {ASSERTION_TYPE}")
