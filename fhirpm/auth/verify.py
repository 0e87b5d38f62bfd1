"""Bearer token verification for the resource server: a JWT in, a Principal out.

Any node verifies any node's tokens with the published signing keys (no session state);
only revocation needs the store, one document read per request. Every failure is a
FhirError 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750), and a
missing token is a 401 with a bare Bearer challenge.
"""

from __future__ import annotations

import time
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from fhirpm.auth.errors import invalid_token, missing_token
from fhirpm.auth.keys import ALG, KeyRing
from fhirpm.auth.principal import Principal
from fhirpm.auth.scopes import ScopeSet
from fhirpm.auth.tokens import ACCESS_TYPE, Tokens

_LEEWAY = 5  # seconds of clock skew between nodes


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer ...` header; 401 when there is none."""
    if not authorization:
        raise missing_token()
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise missing_token()
    return token.strip()


class TokenVerifier:
    def __init__(self, keys: KeyRing, tokens: Tokens, *, issuer: str, audience: str) -> None:
        self.keys = keys
        self.tokens = tokens
        self.issuer = issuer
        self.audience = audience

    async def verify_header(self, authorization: str | None) -> Principal:
        """The Principal of an Authorization header (raises FhirError 401)."""
        return await self.verify(bearer_token(authorization))

    async def verify(self, token: str) -> Principal:
        """The Principal of an access token, or a FhirError 401 invalid_token."""
        claims = await self.claims(token)
        if await self.tokens.is_revoked(claims["jti"]):
            raise invalid_token("the token was revoked")
        return principal_from_claims(claims)

    async def claims(self, token: str) -> dict[str, Any]:
        """Signature, type, issuer, audience and lifetime checked; revocation not."""
        if len(token) > 16384:
            raise invalid_token("token too long")
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError, UnicodeError):
            raise invalid_token("not a JWT") from None
        if header.get("typ") != ACCESS_TYPE or header.get("alg") != ALG:
            raise invalid_token("not an access token of this server")
        keys = await self.keys.verification_keys(header.get("kid"))
        try:
            decoded = jwt.decode(token, keys, algorithms=[ALG])
        except (JoseError, ValueError):
            raise invalid_token("signature does not verify") from None
        claims = dict(decoded.claims)
        _check(claims, self.issuer, self.audience, int(time.time()))
        return claims


def _check(claims: dict[str, Any], issuer: str, audience: str, now: int) -> None:
    if claims.get("iss") != issuer:
        raise invalid_token("issued by another server")
    if claims.get("aud") != audience:
        raise invalid_token("issued for another audience")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp + _LEEWAY <= now:
        raise invalid_token("the token has expired")
    for name in ("sub", "client_id", "jti"):
        if not isinstance(claims.get(name), str):
            raise invalid_token(f"the token has no {name}")


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    return Principal(
        sub=claims["sub"], client_id=claims["client_id"],
        scopes=ScopeSet.parse(claims.get("scope", "")), token_id=claims["jti"],
        exp=claims["exp"], fhir_user=claims.get("fhirUser"), patient=claims.get("patient"),
        encounter=claims.get("encounter"),
        fhir_context=tuple(claims.get("fhirContext") or ()), grant_id=claims.get("gid", ""))
