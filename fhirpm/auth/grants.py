"""The token endpoint: client authentication and the three grants SMART needs.

- authorization_code: the code is single use (compare-and-swap); client, redirect URI and
  PKCE S256 verifier must match what the code was bound to. A code presented twice revokes
  whatever the first exchange issued (RFC 6749 §4.1.2).
- refresh_token: rotation, narrowing only (see tokens.Tokens.refresh).
- client_credentials: backend services with a private_key_jwt assertion; system/ scopes.
  An admin client may also get `fhirpm/admin` this way, with a secret if it has one.

Client authentication follows the client's registered method exactly: `none` (client_id in
the body), `client_secret_basic` (HTTP Basic; the body form is accepted too), or
`private_key_jwt` (a client assertion). Anything else is invalid_client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from fhirpm.auth.assertions import AssertionVerifier, check_assertion_type, unverified_claims
from fhirpm.auth.clients import Client, Clients
from fhirpm.auth.errors import (
    OAuthError,
    invalid_client,
    invalid_grant,
    invalid_request,
    invalid_scope,
    unauthorized_client,
)
from fhirpm.auth.records import CODES, AuthDocs, digest, same_secret
from fhirpm.auth.scopes import ADMIN_SCOPE, ScopeSet, within
from fhirpm.auth.tokens import Grant, Tokens
from fhirpm.auth.users import Users

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(
        b"=").decode()


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise invalid_client("malformed HTTP Basic credentials", basic=True) from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise invalid_client("malformed HTTP Basic credentials", basic=True)
    return unquote(user), unquote(password)  # RFC 6749 §2.3.1 form-encodes both


class ClientAuthenticator:
    def __init__(self, clients: Clients, assertions: AssertionVerifier, token_url: str) -> None:
        self.clients = clients
        self.assertions = assertions
        self.token_url = token_url

    async def authenticate(self, form: Mapping[str, str], authorization: str | None) -> Client:
        """The client making this token/introspection/revocation request."""
        basic = _basic(authorization)
        if basic is not None:
            return await self._secret(basic[0], basic[1], form, method="basic")
        if "client_assertion" in form or "client_assertion_type" in form:
            return await self._assertion(form)
        if "client_secret" in form:
            return await self._secret(form.get("client_id", ""), form["client_secret"], form,
                                      method="post")
        client = await self.clients.get(form.get("client_id"))
        if client is None:
            raise invalid_client("unknown client or no client authentication")
        if not client.public:
            raise invalid_client("this confidential client must authenticate")
        return client

    async def _secret(self, client_id: str, secret: str, form: Mapping[str, str], *,
                      method: str) -> Client:
        basic = method == "basic"
        if form.get("client_id") not in (None, client_id):
            raise invalid_client("client_id in the body differs from the credentials",
                                 basic=basic)
        client = await self.clients.get(client_id)
        if (client is None or client.auth_method != "client_secret_basic"
                or not client.secret_digest or not same_secret(secret, client.secret_digest)):
            raise invalid_client("client authentication failed", basic=basic)
        return client

    async def _assertion(self, form: Mapping[str, str]) -> Client:
        check_assertion_type(form.get("client_assertion_type"))
        assertion = form.get("client_assertion") or ""
        _, claims = unverified_claims(assertion)
        client_id = claims.get("iss")
        if not isinstance(client_id, str) or form.get("client_id") not in (None, client_id):
            raise invalid_client("client_assertion iss must be the client_id")
        client = await self.clients.get(client_id)
        if client is None or client.auth_method != "private_key_jwt":
            raise invalid_client("unknown client, or it does not use private_key_jwt")
        await self.assertions.verify(client, assertion, self.token_url)
        return client


class TokenEndpoint:
    def __init__(self, docs: AuthDocs, auth: ClientAuthenticator, tokens: Tokens,
                 users: Users | None = None) -> None:
        self.docs = docs
        self.auth = auth
        self.tokens = tokens
        self.users = users  # a code of a since disabled or deleted user is refused

    async def handle(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        handler = {"authorization_code": self._code, "refresh_token": self._refresh,
                   "client_credentials": self._client_credentials}.get(grant_type or "")
        if handler is None:
            raise OAuthError("unsupported_grant_type",
                             f"grant_type {grant_type!r} is not supported" if grant_type
                             else "grant_type is required")
        client = await self.auth.authenticate(form, authorization)
        if grant_type not in client.grant_types:
            raise unauthorized_client(f"this client may not use the {grant_type} grant")
        return await handler(client, form)

    async def _code(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        code = form.get("code")
        if not code:
            raise invalid_request("code is required")
        record = await self.docs.get(CODES, digest(code))
        if record is None:
            raise invalid_grant("unknown or expired authorization code")
        grant = Grant.from_json(record.body["grant"])
        if grant.client_id != client.client_id:
            raise invalid_grant("this code was issued to another client")
        if record.body.get("used"):
            await self.tokens.revoke_grant(grant.grant_id)
            raise invalid_grant("this code was already used; what it issued is revoked")
        if form.get("redirect_uri") != record.body["redirect_uri"]:
            raise invalid_grant("redirect_uri differs from the authorization request")
        verifier = form.get("code_verifier") or ""
        if not _VERIFIER.match(verifier) or not hmac.compare_digest(
                s256(verifier), record.body["code_challenge"]):
            raise invalid_grant("code_verifier does not match the code_challenge (PKCE S256)")
        if not await self.docs.swap(CODES, record, digest(code), {**record.body, "used": True},
                                    expires_at=record.expires_at):
            await self.tokens.revoke_grant(grant.grant_id)
            raise invalid_grant("this code was already used")
        if self.users is not None and await self.users.get(grant.sub) is None:
            raise invalid_grant("the user of this code is disabled or deleted")
        return await self.tokens.issue(grant, nonce=record.body.get("nonce"))

    async def _refresh(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token")
        if not token:
            raise invalid_request("refresh_token is required")
        return await self.tokens.refresh(client.client_id, token, form.get("scope"))

    async def _client_credentials(self, client: Client,
                                  form: Mapping[str, str]) -> dict[str, Any]:
        asymmetric = client.auth_method == "private_key_jwt"
        if not asymmetric and not client.admin:
            raise unauthorized_client("client_credentials needs private_key_jwt")
        requested = ScopeSet.parse(form.get("scope"))
        allowed = within(requested, ScopeSet.parse(client.scope))
        granted = ScopeSet.parse(" ".join(
            [s.text for s in allowed.resource if s.context == "system" and asymmetric]
            + [ADMIN_SCOPE] * (ADMIN_SCOPE in allowed and client.admin)))
        if not granted:
            raise invalid_scope("request system/ scopes this client is registered for")
        grant = Grant(client_id=client.client_id, sub=client.client_id, scope=str(granted))
        return await self.tokens.issue(grant)
