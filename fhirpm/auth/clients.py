"""Registered client applications: who may ask for tokens, from where, and how they prove
who they are at the token endpoint.

Three kinds, by `token_endpoint_auth_method`: `none` (public apps: PKCE only),
`client_secret_basic` (confidential, symmetric secret) and `private_key_jwt` (confidential,
asymmetric: a JWKS or JWKS URL). Backend services are `private_key_jwt` clients with the
`client_credentials` grant and `system/` scopes.

An admin client may hold the `fhirpm/admin` scope (the admin API, fhirpm.auth.admin_api);
no other client can register or be granted it. An admin client with a secret may use
`client_credentials`, but only for that scope: FHIR data through `system/` scopes still
needs private_key_jwt (SMART Backend Services). A disabled client is unknown to every
flow (`Clients.get` does not return it); only the administration reads it (`load`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhirpm.auth.records import CLIENTS, AuthDocs, Record, digest, random_token
from fhirpm.auth.scopes import ADMIN_SCOPE, ScopeSet
from fhirpm.errors import Category, FhirError

AUTH_METHODS = ("none", "client_secret_basic", "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
APP_SCOPE = ("openid fhirUser profile launch launch/patient launch/encounter offline_access "
             "online_access patient/*.cruds user/*.cruds")
BACKEND_SCOPE = "system/*.cruds"


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    auth_method: str
    redirect_uris: tuple[str, ...] = ()
    launch_uri: str | None = None
    scope: str = APP_SCOPE  # the most this client may ever be granted
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    secret_digest: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    admin: bool = False  # may hold fhirpm/admin
    disabled: bool = False

    @property
    def public(self) -> bool:
        return self.auth_method == "none"

    def record(self) -> dict[str, Any]:
        """The stored (and printed) form; the secret appears only as its digest."""
        out: dict[str, Any] = {
            "client_id": self.client_id, "client_name": self.name,
            "token_endpoint_auth_method": self.auth_method,
            "redirect_uris": list(self.redirect_uris), "scope": self.scope,
            "grant_types": list(self.grant_types), "admin": self.admin,
            "disabled": self.disabled}
        for key, value in (("launch_uri", self.launch_uri), ("jwks", self.jwks),
                           ("jwks_uri", self.jwks_uri), ("secret_digest", self.secret_digest)):
            if value is not None:
                out[key] = value
        return out


def client_from_record(body: dict[str, Any]) -> Client:
    return Client(
        client_id=body["client_id"], name=body.get("client_name", ""),
        auth_method=body["token_endpoint_auth_method"],
        redirect_uris=tuple(body.get("redirect_uris", ())), launch_uri=body.get("launch_uri"),
        scope=body.get("scope", APP_SCOPE), grant_types=tuple(body.get("grant_types", ())),
        secret_digest=body.get("secret_digest"), jwks=body.get("jwks"),
        jwks_uri=body.get("jwks_uri"), admin=bool(body.get("admin")),
        disabled=bool(body.get("disabled")))


def _bad(message: str) -> FhirError:
    return FhirError(Category.VALUE, message)


def _check_uri(uri: str, what: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise _bad(f"{what} must be an absolute http(s) URL without a fragment: {uri!r}")
    return uri


def _check_jwks(jwks: Any) -> dict[str, Any]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise _bad("jwks must be a JSON Web Key Set: {\"keys\": [...]}")
    public = {"keys": [{k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq",
                                                                    "qi", "k")}
                       for key in jwks["keys"] if isinstance(key, dict)]}
    try:
        KeySet.import_key_set(public)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise _bad(f"jwks holds a key that cannot be used: {exc}") from None
    return public


def build_client(*, name: str, auth_method: str, redirect_uris: list[str] | tuple[str, ...] = (),
                 launch_uri: str | None = None, scope: str | None = None,
                 grant_types: list[str] | tuple[str, ...] | None = None,
                 jwks: dict[str, Any] | None = None, jwks_uri: str | None = None,
                 admin: bool = False) -> tuple[Client, str | None]:
    """A validated new client and its secret (shown once; only its digest is kept)."""
    if auth_method not in AUTH_METHODS:
        raise _bad(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    secret = random_token(32) if auth_method == "client_secret_basic" else None
    client = check_client(Client(
        client_id=str(uuid.uuid4()), name=name, auth_method=auth_method,
        redirect_uris=tuple(redirect_uris), launch_uri=launch_uri, scope=scope or "",
        grant_types=tuple(grant_types or ()), secret_digest=digest(secret) if secret else None,
        jwks=jwks, jwks_uri=jwks_uri, admin=admin))
    return client, secret


def check_client(client: Client) -> Client:
    """`client` validated and normalised (new, or changed by an administrator): an empty
    scope or grant list means the default for its kind; only public JWK parts are kept."""
    if len(client.name) > 200:
        raise _bad("client_name is longer than 200 characters")
    method = client.auth_method
    if method not in AUTH_METHODS:
        raise _bad(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    grants = client.grant_types or ("authorization_code", "refresh_token")
    unknown = set(grants) - set(GRANT_TYPES)
    if unknown:
        raise _bad(f"unsupported grant types: {', '.join(sorted(unknown))}")
    if "client_credentials" in grants and method != "private_key_jwt" and not (
            client.admin and method == "client_secret_basic"):
        raise _bad("client_credentials (backend services) needs private_key_jwt "
                   "(or, for an admin client, a client secret)")
    uris = tuple(_check_uri(u, "redirect_uri") for u in client.redirect_uris)
    if "authorization_code" in grants and not uris:
        raise _bad("an app that uses the authorization code grant needs a redirect_uri")
    if client.launch_uri is not None:
        _check_uri(client.launch_uri, "launch_uri")
    jwks, jwks_uri = client.jwks, client.jwks_uri
    if method == "private_key_jwt":
        if (jwks is None) == (jwks_uri is None):
            raise _bad("private_key_jwt needs exactly one of jwks or jwks_uri")
        jwks = _check_jwks(jwks) if jwks is not None else None
        jwks_uri = _check_uri(jwks_uri, "jwks_uri") if jwks_uri is not None else None
    elif jwks is not None or jwks_uri is not None:
        raise _bad("jwks and jwks_uri are only for private_key_jwt clients")
    scope = client.scope.strip() or _default_scope(grants, method, client.admin)
    if len(scope) > 4000:
        raise _bad("scope is longer than 4000 characters")
    if ADMIN_SCOPE in ScopeSet.parse(scope) and not client.admin:
        raise _bad(f"only an admin client may hold the {ADMIN_SCOPE} scope")
    return replace(client, name=client.name or "unnamed app", redirect_uris=uris,
                   grant_types=tuple(grants), jwks=jwks, jwks_uri=jwks_uri, scope=scope)


def _default_scope(grants: tuple[str, ...], method: str, admin: bool) -> str:
    parts = [APP_SCOPE] if "authorization_code" in grants else []
    if "client_credentials" in grants and method == "private_key_jwt":
        parts.append(BACKEND_SCOPE)
    if admin:
        parts.append(ADMIN_SCOPE)
    return " ".join(parts)


class Clients:
    def __init__(self, docs: AuthDocs) -> None:
        self.docs = docs

    async def add(self, *, client_id: str | None = None, disabled: bool = False,
                  **spec: Any) -> tuple[Client, str | None]:
        """Register a client (see build_client) under a new id, or `client_id`; returns
        it and its secret, if any."""
        client, secret = build_client(**spec)
        client = replace(client, client_id=client_id or client.client_id, disabled=disabled)
        body = {**client.record(), "created": int(time.time())}
        if not await self.docs.create(CLIENTS, client.client_id, body):
            raise FhirError(Category.CONFLICT, f"Client {client.client_id!r} already exists")
        return client, secret

    async def get(self, client_id: str | None) -> Client | None:
        """An enabled client (what every flow uses: a disabled one is unknown)."""
        found = await self.load(client_id)
        return found[0] if found and not found[0].disabled else None

    async def load(self, client_id: str | None) -> tuple[Client, Record] | None:
        """A client in any state, with the record to compare-and-swap against."""
        if not client_id or len(client_id) > 200:
            return None
        record = await self.docs.get(CLIENTS, client_id)
        return (client_from_record(record.body), record) if record else None

    async def replace(self, record: Record, client: Client,
                      secret_digest: str | None = None) -> bool:
        """Store a changed client (see check_client) unless someone changed it since
        `record` was read; a new secret digest replaces the old one."""
        if secret_digest is not None:
            client = replace(client, secret_digest=secret_digest)
        body = {**client.record(), "created": record.body.get("created"),
                "updated": int(time.time())}
        return await self.docs.swap(CLIENTS, record, client.client_id, body)

    async def remove(self, client_id: str) -> bool:
        return await self.docs.delete(CLIENTS, client_id)
