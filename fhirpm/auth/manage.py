"""Client and user administration: the one implementation behind `fhirpm clients|users ...`
(fhirpm.auth.admin) and the admin HTTP API (fhirpm.auth.admin_api).

Both hand in JSON-shaped specs (the field names of the stored and printed records) and get
JSON-shaped answers back: a client's secret appears once, when it is created or replaced,
and a password hash never. Records change by compare-and-swap, so two administrators
cannot silently overwrite each other. Whatever takes rights away revokes what was granted
under the old rights: disabling or deleting a client or user, changing what a client may
hold (scope, grant types, admin) or a user's admin flag or fhirUser, and a password reset.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from fhirpm.auth.clients import Client, check_client, client_from_record
from fhirpm.auth.records import CLIENTS, USERS, digest, random_token
from fhirpm.auth.server import AuthServer
from fhirpm.auth.tokens import client_owner, user_owner
from fhirpm.auth.users import User, check_user, user_from_record
from fhirpm.errors import Category, FhirError

CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
MAX_LISTED = 10_000

# Client fields an administrator may set: name -> accepted JSON type(s).
_CLIENT_FIELDS: dict[str, tuple[type, ...]] = {
    "client_name": (str,), "redirect_uris": (list,), "launch_uri": (str, type(None)),
    "scope": (str, type(None)), "grant_types": (list, type(None)),
    "jwks": (dict, type(None)), "jwks_uri": (str, type(None)), "admin": (bool,),
    "disabled": (bool,)}
_CLIENT_CREATE_ONLY: dict[str, tuple[type, ...]] = {
    "client_id": (str,), "token_endpoint_auth_method": (str,)}
_USER_FIELDS: dict[str, tuple[type, ...]] = {
    "fhirUser": (str, type(None)), "name": (str, type(None)), "admin": (bool,),
    "disabled": (bool,)}
_USER_CREATE_ONLY: dict[str, tuple[type, ...]] = {"username": (str,), "password": (str,)}
# What a client or user may hold: changing any of these revokes their tokens.
_CLIENT_RIGHTS = ("disabled", "admin", "scope", "grant_types")
_USER_RIGHTS = ("disabled", "admin", "fhir_user")


def _bad(message: str) -> FhirError:
    return FhirError(Category.VALUE, message)


def _not_found(what: str, key: str) -> FhirError:
    return FhirError(Category.NOT_FOUND, f"No {what} {key!r}")


def _fields(spec: Any, allowed: Mapping[str, tuple[type, ...]]) -> dict[str, Any]:
    """The spec's fields, each known and of its JSON type (400 otherwise)."""
    if not isinstance(spec, Mapping):
        raise _bad("the body must be a JSON object")
    for name, value in spec.items():
        types = allowed.get(name)
        if types is None:
            raise _bad(f"unknown or read-only field {name!r}; "
                       f"settable: {', '.join(sorted(allowed))}")
        if not isinstance(value, types) or (bool in types) != isinstance(value, bool):
            raise _bad(f"{name} has the wrong JSON type")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise _bad(f"{name} must be a list of strings")
    return dict(spec)


def client_view(client: Client, secret: str | None = None) -> dict[str, Any]:
    """A client as shown: never the secret's digest; the secret itself only when new."""
    out = {k: v for k, v in client.record().items() if k != "secret_digest"}
    if secret:
        out["client_secret"] = secret
    return out


async def _retry[T](attempt: Callable[[], Awaitable[T | None]]) -> T:
    """Run a read-modify-compare-and-swap until it lands (None: someone else won)."""
    for _ in range(5):
        result = await attempt()
        if result is not None:
            return result
    raise FhirError(Category.CONFLICT, "the record is being changed concurrently; try again")


class Administration:
    """Clients and users of one AuthServer, as an administrator sees them."""

    def __init__(self, server: AuthServer) -> None:
        self.server = server

    # -- clients ----------------------------------------------------------------------

    async def list_clients(self) -> list[dict[str, Any]]:
        records = await self.server.docs.list(CLIENTS, limit=MAX_LISTED)
        return [client_view(client_from_record(r.body)) for r in records]

    async def client(self, client_id: str) -> dict[str, Any]:
        return client_view(await self._client(client_id))

    async def _client(self, client_id: str) -> Client:
        found = await self.server.clients.load(client_id)
        if found is None:
            raise _not_found("client", client_id)
        return found[0]

    async def create_client(self, spec: Any) -> dict[str, Any]:
        """Register a client; the answer carries its secret (this once) if it has one."""
        fields = _fields(spec, {**_CLIENT_FIELDS, **_CLIENT_CREATE_ONLY})
        client_id = fields.get("client_id")
        if client_id is not None and not CLIENT_ID.match(client_id):
            raise _bad("client_id is 1-128 letters, digits or ._~-")
        client, secret = await self.server.clients.add(
            client_id=client_id, disabled=fields.get("disabled", False),
            name=fields.get("client_name", ""),
            auth_method=fields.get("token_endpoint_auth_method", "client_secret_basic"),
            redirect_uris=fields.get("redirect_uris", ()), launch_uri=fields.get("launch_uri"),
            scope=fields.get("scope"), grant_types=fields.get("grant_types"),
            jwks=fields.get("jwks"), jwks_uri=fields.get("jwks_uri"),
            admin=fields.get("admin", False))
        return client_view(client, secret)

    async def update_client(self, client_id: str, changes: Any) -> dict[str, Any]:
        """Change the given fields (null resets scope and grant types to the default)."""
        fields = _fields(changes, _CLIENT_FIELDS)

        async def attempt() -> tuple[Client, Client] | None:
            found = await self.server.clients.load(client_id)
            if found is None:
                raise _not_found("client", client_id)
            old, record = found
            values = {("name" if k == "client_name" else k): v for k, v in fields.items()}
            for name in ("redirect_uris", "grant_types"):
                if name in values:
                    values[name] = tuple(values[name] or ())
            if "scope" in values:
                values["scope"] = values["scope"] or ""
            new = check_client(replace(old, **values))
            return (old, new) if await self.server.clients.replace(record, new) else None

        old, new = await _retry(attempt)
        if any(getattr(old, f) != getattr(new, f) for f in _CLIENT_RIGHTS):
            await self.server.tokens.revoke_owner(client_owner(client_id))
        return client_view(new)

    async def new_secret(self, client_id: str) -> dict[str, Any]:
        """Replace a confidential client's secret; the answer shows the new one, once.
        Tokens already issued stay valid (disable the client to end them)."""
        secret = random_token(32)

        async def attempt() -> Client | None:
            found = await self.server.clients.load(client_id)
            if found is None:
                raise _not_found("client", client_id)
            client, record = found
            if client.auth_method != "client_secret_basic":
                raise _bad("only a client_secret_basic client has a secret")
            done = await self.server.clients.replace(record, client, digest(secret))
            return client if done else None

        return client_view(await _retry(attempt), secret)

    async def delete_client(self, client_id: str) -> None:
        """Remove a client and revoke every token it holds."""
        await self._client(client_id)
        await self.server.clients.remove(client_id)
        await self.server.tokens.revoke_owner(client_owner(client_id))

    # -- users ------------------------------------------------------------------------

    async def list_users(self) -> list[dict[str, Any]]:
        records = await self.server.docs.list(USERS, limit=MAX_LISTED)
        return [user_from_record(r.body).public() for r in records]

    async def user(self, username: str) -> dict[str, Any]:
        return (await self._user(username)).public()

    async def _user(self, username: str) -> User:
        found = await self.server.users.load(username)
        if found is None:
            raise _not_found("user", username)
        return found[0]

    async def create_user(self, spec: Any) -> dict[str, Any]:
        fields = _fields(spec, {**_USER_FIELDS, **_USER_CREATE_ONLY})
        if "username" not in fields or "password" not in fields:
            raise FhirError(Category.REQUIRED, "username and password are required")
        user = await self.server.users.add(
            fields["username"], fields["password"], fhir_user=fields.get("fhirUser"),
            name=fields.get("name"), admin=fields.get("admin", False),
            disabled=fields.get("disabled", False))
        return user.public()

    async def update_user(self, username: str, changes: Any) -> dict[str, Any]:
        fields = _fields(changes, _USER_FIELDS)
        values = {("fhir_user" if k == "fhirUser" else k): v for k, v in fields.items()}
        old, new = await self._change_user(username, lambda user: check_user(
            replace(user, **values)))
        if any(getattr(old, f) != getattr(new, f) for f in _USER_RIGHTS):
            await self.server.tokens.revoke_owner(user_owner(username))
        return new.public()

    async def set_password(self, username: str, spec: Any) -> dict[str, Any]:
        """A new password: clears a lockout and signs the user out of every app."""
        fields = _fields(spec, {"password": (str,)})
        if "password" not in fields:
            raise FhirError(Category.REQUIRED, "password is required")
        _, user = await self._change_user(username, lambda user: user, fields["password"])
        await self.server.tokens.revoke_owner(user_owner(username))
        return user.public()

    async def _change_user(self, username: str, change: Callable[[User], User],
                           password: str | None = None) -> tuple[User, User]:
        async def attempt() -> tuple[User, User] | None:
            found = await self.server.users.load(username)
            if found is None:
                raise _not_found("user", username)
            old, record = found
            new = change(old)
            return (old, new) if await self.server.users.replace(record, new, password) else None
        return await _retry(attempt)

    async def delete_user(self, username: str) -> None:
        """Remove a user and revoke every token issued to them."""
        await self._user(username)
        await self.server.users.remove(username)
        await self.server.tokens.revoke_owner(user_owner(username))
