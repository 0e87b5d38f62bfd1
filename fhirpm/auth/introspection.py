"""Token introspection (RFC 7662) and revocation (RFC 7009).

Introspection is for resource servers and confidential clients: the caller authenticates
as a client (not a public one) or presents a valid access token of its own. The answer is
`{"active": false}` for anything unknown, expired or revoked, else the token's scope,
client, subject, expiry, fhirUser and launch context.

Revocation takes an access or a refresh token from the client it was issued to and revokes
the whole grant behind it: every access token and the refresh token die together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirpm.auth.errors import invalid_client, invalid_request, unauthorized_client
from fhirpm.auth.grants import ClientAuthenticator
from fhirpm.auth.records import REVOKED
from fhirpm.auth.tokens import Grant, Tokens
from fhirpm.auth.verify import TokenVerifier, bearer_token
from fhirpm.errors import FhirError


class Introspection:
    def __init__(self, auth: ClientAuthenticator, verifier: TokenVerifier, tokens: Tokens,
                 issuer: str) -> None:
        self.auth = auth
        self.verifier = verifier
        self.tokens = tokens
        self.issuer = issuer

    async def introspect(self, form: Mapping[str, str],
                         authorization: str | None) -> dict[str, Any]:
        await self._caller(form, authorization)
        token = form.get("token")
        if not token:
            raise invalid_request("token is required")
        if token.startswith("rt."):
            grant = await self.tokens.refresh_grant(token)
            return _grant_answer(grant, self.issuer) if grant else {"active": False}
        try:
            principal = await self.verifier.verify(token)
        except FhirError:
            return {"active": False}
        return {"active": True, "iss": self.issuer, "token_type": "Bearer",
                **principal.introspection()}

    async def _caller(self, form: Mapping[str, str], authorization: str | None) -> None:
        if authorization and authorization.lower().startswith("bearer "):
            try:
                await self.verifier.verify(bearer_token(authorization))
            except FhirError:
                raise invalid_client("the bearer token of the caller is not valid") from None
            return
        client = await self.auth.authenticate(form, authorization)
        if client.public:
            raise invalid_client("introspection needs a confidential client or a bearer token")

    async def revoke(self, form: Mapping[str, str], authorization: str | None) -> None:
        client = await self.auth.authenticate(form, authorization)
        token = form.get("token")
        if not token:
            raise invalid_request("token is required")
        if token.startswith("rt."):
            grant = await self.tokens.refresh_grant(token)
            if grant is not None:
                _check_owner(grant.client_id, client.client_id)
                await self.tokens.revoke_grant(grant.grant_id)
            return
        try:
            claims = await self.verifier.claims(token)
        except FhirError:
            return  # unknown, foreign or expired: nothing to revoke (RFC 7009 §2.2)
        _check_owner(claims["client_id"], client.client_id)
        await self.tokens.docs.put(REVOKED, claims["jti"], {"grant_id": claims.get("gid")},
                                   expires_at=claims["exp"])
        if claims.get("gid"):
            await self.tokens.revoke_grant(claims["gid"])


def _check_owner(owner: str, caller: str) -> None:
    if owner != caller:
        raise unauthorized_client("this token was issued to another client")


def _grant_answer(grant: Grant, issuer: str) -> dict[str, Any]:
    out: dict[str, Any] = {"active": True, "iss": issuer, "token_type": "refresh_token",
                           "scope": grant.scope, "client_id": grant.client_id,
                           "sub": grant.sub}
    for key, value in (("fhirUser", grant.fhir_user), ("patient", grant.patient),
                       ("encounter", grant.encounter)):
        if value:
            out[key] = value
    return out

