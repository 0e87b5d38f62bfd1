"""Grants and the tokens they yield: signed JWT access tokens, id_tokens, rotating refresh
tokens, and revocation.

A grant is one authorization (a consent, or a backend client's credentials). Its document
records the context decided at authorization (user, patient, encounter, granted scope) and
the ids of the access tokens issued under it, so revoking any of its tokens revokes them
all: each live access token id goes on the revocation list, which is all a verifier reads.
Refresh tokens rotate on every use (single use by compare-and-swap); presenting a used one
again revokes the whole grant, as a stolen-token signal (OAuth 2.0 Security BCP).
Each grant is also listed under its client and its user (OWNERS, living as long as the
grant), so disabling or deleting either revokes all it holds (`revoke_owner`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from joserfc import jwt

from fhirpm.auth.errors import invalid_grant, invalid_scope
from fhirpm.auth.keys import ALG, KeyRing
from fhirpm.auth.records import (
    GRANTS,
    OWNERS,
    REFRESH,
    REVOKED,
    AuthDocs,
    digest,
    random_token,
)
from fhirpm.auth.scopes import ScopeSet
from fhirpm.config import AuthSettings

ACCESS_TYPE = "at+jwt"  # RFC 9068 header typ of our access tokens


@dataclass(frozen=True, slots=True)
class Grant:
    """What one authorization decided."""

    client_id: str
    sub: str
    scope: str
    fhir_user: str | None = None
    patient: str | None = None
    encounter: str | None = None
    fhir_context: tuple[dict[str, Any], ...] = ()
    need_patient_banner: bool | None = None  # None: not an app launch (backend services)
    auth_time: int | None = None
    grant_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def scopes(self) -> ScopeSet:
        return ScopeSet.parse(self.scope)

    @property
    def refresh_kind(self) -> str | None:
        scopes = self.scopes
        if "offline_access" in scopes:
            return "offline"
        if "online_access" in scopes:
            return "online"
        return None

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["fhir_context"] = list(self.fhir_context)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Grant:
        known = {k: body[k] for k in cls.__dataclass_fields__ if k in body}
        known["fhir_context"] = tuple(known.get("fhir_context") or ())
        return cls(**known)


class Tokens:
    def __init__(self, docs: AuthDocs, keys: KeyRing, settings: AuthSettings, *,
                 issuer: str, audience: str, style_url: str) -> None:
        self.docs = docs
        self.keys = keys
        self.settings = settings
        self.issuer = issuer
        self.audience = audience
        self.style_url = style_url

    # -- issuing ----------------------------------------------------------------------

    async def issue(self, grant: Grant, *, nonce: str | None = None) -> dict[str, Any]:
        """The token response for a new grant (code exchange or client credentials)."""
        return await self._respond(grant, grant.scopes, nonce=nonce, rotate_from=None)

    async def refresh(self, client_id: str, token: str, scope: str | None) -> dict[str, Any]:
        """Exchange a refresh token (once) for new tokens, optionally with a narrower scope."""
        record = await self.docs.get(REFRESH, digest(token))
        if record is None:
            raise invalid_grant("unknown or expired refresh token")
        grant_record = await self.docs.get(GRANTS, record.body["grant_id"])
        if grant_record is None or grant_record.body.get("revoked"):
            raise invalid_grant("this refresh token was revoked")
        grant = Grant.from_json(grant_record.body["grant"])
        if grant.client_id != client_id:
            raise invalid_grant("this refresh token was issued to another client")
        if record.body.get("used") or not await self.docs.swap(
                REFRESH, record, digest(token), {**record.body, "used": True},
                expires_at=record.expires_at):
            await self.revoke_grant(grant.grant_id)
            raise invalid_grant("this refresh token was already used; the grant is revoked")
        granted = grant.scopes
        wanted = granted if not (scope or "").strip() else ScopeSet.parse(scope)
        if not wanted or not granted.covers(wanted):
            raise invalid_scope("a refresh may narrow the granted scope, never widen it")
        return await self._respond(grant, wanted, nonce=None, rotate_from=grant.grant_id)

    async def _respond(self, grant: Grant, scopes: ScopeSet, *, nonce: str | None,
                       rotate_from: str | None) -> dict[str, Any]:
        now = int(time.time())
        lifetime = self.settings.access_token_seconds
        jti = str(uuid.uuid4())
        access = await self._sign({"typ": ACCESS_TYPE}, self._access_claims(
            grant, scopes, jti, now, now + lifetime))
        refresh_kind = grant.refresh_kind
        refresh_until = now + (self.settings.offline_refresh_seconds if refresh_kind == "offline"
                               else self.settings.online_refresh_seconds)
        keep_until = refresh_until if refresh_kind else now + lifetime
        await self._record_access(grant, jti, now + lifetime, keep_until, existing=rotate_from)
        out: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                               "expires_in": lifetime, "scope": str(scopes)}
        if refresh_kind:
            refresh = "rt." + random_token(32)
            await self.docs.put(REFRESH, digest(refresh), {"grant_id": grant.grant_id},
                                expected_rev=0, expires_at=refresh_until)
            out["refresh_token"] = refresh
        if "openid" in scopes and grant.sub != grant.client_id:
            out["id_token"] = await self.id_token(grant, scopes, nonce, now)
        out.update(self._launch_context(grant))
        return out

    def _access_claims(self, grant: Grant, scopes: ScopeSet, jti: str, now: int,
                       exp: int) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": grant.sub, "aud": self.audience, "iat": now,
            "exp": exp, "jti": jti, "client_id": grant.client_id, "scope": str(scopes),
            "gid": grant.grant_id}
        for key, value in (("fhirUser", grant.fhir_user), ("patient", grant.patient),
                           ("encounter", grant.encounter)):
            if value:
                claims[key] = value
        if grant.fhir_context:
            claims["fhirContext"] = list(grant.fhir_context)
        return claims

    def _launch_context(self, grant: Grant) -> dict[str, Any]:
        if grant.need_patient_banner is None:
            return {}
        out: dict[str, Any] = {"need_patient_banner": grant.need_patient_banner,
                               "smart_style_url": self.style_url}
        if grant.patient:
            out["patient"] = grant.patient
        if grant.encounter:
            out["encounter"] = grant.encounter
        if grant.fhir_context:
            out["fhirContext"] = list(grant.fhir_context)
        return out

    async def id_token(self, grant: Grant, scopes: ScopeSet, nonce: str | None,
                       now: int) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": grant.sub, "aud": grant.client_id, "iat": now,
            "exp": now + self.settings.id_token_seconds}
        if grant.auth_time:
            claims["auth_time"] = grant.auth_time
        if nonce:
            claims["nonce"] = nonce
        if grant.fhir_user and ("fhirUser" in scopes or "profile" in scopes):
            claims["fhirUser"] = self._absolute(grant.fhir_user)
        return await self._sign({"typ": "JWT"}, claims)

    def _absolute(self, reference: str) -> str:
        return f"{self.audience}/{reference}"

    async def _sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        key = await self.keys.signing_key()
        return jwt.encode({**header, "alg": ALG, "kid": key.kid}, claims, key, algorithms=[ALG])

    async def _record_access(self, grant: Grant, jti: str, exp: int, keep_until: int, *,
                             existing: str | None) -> None:
        """Note the access token under its grant; refuse if the grant was revoked."""
        now = int(time.time())
        for _ in range(10):
            record = await self.docs.get(GRANTS, grant.grant_id)
            if existing is not None and (record is None or record.body.get("revoked")):
                raise invalid_grant("the grant was revoked")
            access = {k: v for k, v in (record.body.get("access", {}) if record else {}).items()
                      if v > now}
            access[jti] = exp
            body = {"grant": grant.to_json(), "access": access, "revoked": False}
            until = max(keep_until, record.body.get("until", 0) if record else 0, exp)
            body["until"] = until
            if record is None:
                done = await self.docs.create(GRANTS, grant.grant_id, body, expires_at=until)
            else:
                done = await self.docs.swap(GRANTS, record, grant.grant_id, body,
                                            expires_at=until)
            if done:
                if record is None or until != record.body.get("until"):
                    await self._list_under_owners(grant, until)
                return
        raise invalid_grant("the grant is being changed concurrently; try again")

    async def _list_under_owners(self, grant: Grant, until: int) -> None:
        for owner in owners_of(grant):
            await self.docs.put(OWNERS, f"{owner}/{grant.grant_id}",
                                {"grant_id": grant.grant_id}, expires_at=until)

    # -- revocation -------------------------------------------------------------------

    async def revoke_grant(self, grant_id: str) -> None:
        """Revoke every access token of a grant and make its refresh tokens useless."""
        for _ in range(10):
            record = await self.docs.get(GRANTS, grant_id)
            if record is None:
                return
            now = int(time.time())
            for jti, exp in record.body.get("access", {}).items():
                if exp > now:
                    await self.docs.put(REVOKED, jti, {"grant_id": grant_id}, expires_at=exp)
            body = {**record.body, "revoked": True}
            if await self.docs.swap(GRANTS, record, grant_id, body,
                                    expires_at=record.body.get("until")):
                return

    async def revoke_owner(self, owner: str) -> int:
        """Revoke every live grant of `owner` (`client_owner(id)`, `user_owner(name)`);
        returns how many. Grants issued while this runs are caught by the next pass."""
        count = 0
        while batch := await self.docs.list(OWNERS, owner + "/", limit=500):
            for entry in batch:
                await self.revoke_grant(entry.body["grant_id"])
                await self.docs.delete(OWNERS, f"{owner}/{entry.body['grant_id']}")
            count += len(batch)
        return count

    async def is_revoked(self, jti: str) -> bool:
        return await self.docs.get(REVOKED, jti) is not None

    async def refresh_grant(self, token: str) -> Grant | None:
        """The live grant of an unused refresh token (introspection, revocation)."""
        record = await self.docs.get(REFRESH, digest(token))
        if record is None or record.body.get("used"):
            return None
        grant_record = await self.docs.get(GRANTS, record.body["grant_id"])
        if grant_record is None or grant_record.body.get("revoked"):
            return None
        return Grant.from_json(grant_record.body["grant"])


def client_owner(client_id: str) -> str:
    return f"client/{client_id}"


def user_owner(username: str) -> str:
    return f"user/{username}"


def owners_of(grant: Grant) -> list[str]:
    """Whom a grant belongs to: its client, and its user unless a backend client is both."""
    owners = [client_owner(grant.client_id)]
    if grant.sub != grant.client_id:
        owners.append(user_owner(grant.sub))
    return owners
