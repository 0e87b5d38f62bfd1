"""The audit hooks outside the FHIR API: the authorization server (logins, tokens issued,
refreshed and revoked, consent decisions) and HL7 v2 message receipt.

Each hook is one call at its site (fhirpm.auth.routes, fhirpm.hl7v2.inbound) through
`audit_of(owner)`, which answers a no-op when the audit trail is off, so those modules need
no configuration of their own. Events go through `Recorder.record` (group commit,
fail-closed): a token or login answer waits until its event is stored, and is refused (503)
when it cannot be.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from fhirpm.audit import events as ev
from fhirpm.audit import record as rec
from fhirpm.repository.service import now_instant

if TYPE_CHECKING:
    from fhirpm.audit.recorder import Recorder
    from fhirpm.storage.port import UnitOfWork


class AuditHooks:
    """What the authorization server and the HL7 v2 listener report."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    # -- authorization server ------------------------------------------------------------

    async def login(self, request: Any, username: str, error: str | None = None) -> None:
        """A login attempt at the login page (`error`: why it failed)."""
        who = self.recorder.who(user=username or None)
        outcome = ev.Outcome(401, error) if error else ev.Outcome(200)
        await self._record(ev.login_event(username, who, self.recorder.server, outcome,
                                          now_instant()))

    @contextlib.asynccontextmanager
    async def token(self, request: Any, form: Mapping[str, str]
                    ) -> AsyncIterator[Callable[[Mapping[str, Any]], None]]:
        """Around the token endpoint: `seen(body)` with the issued response; an exception
        leaving the block is recorded as a refused request."""
        kind = "refresh" if form.get("grant_type") == "refresh_token" else "issue"
        issued: dict[str, Any] = {}
        try:
            yield issued.update
        except Exception as exc:
            who = self.recorder.who(client_id=_client_of(request, form))
            await self._record(ev.token_event(kind, who, self.recorder.server,
                                              _failure(exc), now_instant(),
                                              request=dict(form)))
            raise
        claims = _claims(issued.get("access_token"))
        who = self.recorder.who(client_id=claims.get("client_id") or _client_of(request, form),
                                user=_user_of(claims), fhir_user=claims.get("fhirUser"))
        patient = issued.get("patient")
        await self._record(ev.token_event(
            kind, who, self.recorder.server, ev.Outcome(200), now_instant(),
            request=dict(form), token_id=claims.get("jti"),
            patient=patient if isinstance(patient, str) else None))

    @contextlib.asynccontextmanager
    async def revoke(self, request: Any, form: Mapping[str, str]) -> AsyncIterator[None]:
        """Around the revocation endpoint."""
        claims = _claims(form.get("token"))
        who = self.recorder.who(client_id=_client_of(request, form), user=_user_of(claims),
                                fhir_user=claims.get("fhirUser"))
        try:
            yield
        except Exception as exc:
            await self._record(ev.token_event("revoke", who, self.recorder.server,
                                              _failure(exc), now_instant(),
                                              request=dict(form), token_id=claims.get("jti")))
            raise
        await self._record(ev.token_event("revoke", who, self.recorder.server,
                                          ev.Outcome(200), now_instant(), request=dict(form),
                                          token_id=claims.get("jti")))

    async def consent(self, request: Any, user: str | None, pending: Any,
                      scopes: list[str], granted: bool) -> None:
        """The user's decision at the consent page for `pending` (an authorization
        request: its client and launch patient)."""
        context = getattr(pending, "context", None)
        patient = getattr(context, "patient", None) or getattr(pending, "patient", None)
        who = self.recorder.who(client_id=getattr(pending, "client_id", None), user=user)
        await self._record(ev.consent_event(who, self.recorder.server, ev.Outcome(200),
                                            now_instant(), granted=granted,
                                            scopes=tuple(scopes), patient=patient))

    # -- HL7 v2 ---------------------------------------------------------------------------

    def folded(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around an HL7 v2 message's writes: they are recorded by its receipt
        (`received`), not one by one (Recorder.folded)."""
        return self.recorder.folded()

    async def received(self, record: Any, *, unit: UnitOfWork | None = None,
                       versions: Sequence[str] = ()) -> None:
        """An HL7 v2 message received and answered: `record` is its message-log entry
        (fhirpm.hl7v2.messages.LoggedMessage: sender, peer, type, control id, status,
        error, the resources it names and its patient); `versions`, the versions its
        writes made (`Type/id/_history/n`), listed instead of those resources (a message
        that changed nothing lists the resources it named).
        With `unit`, the event is put into that unit of work (the message's own: it
        commits with the data)."""
        status = {"processed": 200, "error": 422, "rejected": 400}.get(record.status, 500)
        sender = "^".join(p for p in (record.sender, record.facility) if p)
        who = ev.Who(client_id=sender or None, address=record.peer or None,
                      request_id=f"hl7v2:{record.id}")
        patient = record.patient.removeprefix("Patient/") or None
        event = ev.message_event(
            sender, who, self.recorder.server,
            ev.Outcome(status, record.error or None), now_instant(),
            message_type=record.type, control_id=record.control_id,
            resources=tuple(versions or record.resources), patient=patient)
        if unit is not None:
            await self.recorder.trail.append(unit, [rec.whole(event)])
        else:
            await self._record(event)

    async def _record(self, event: dict[str, Any]) -> None:
        await self.recorder.record([event])


class _Silent:
    """The hooks when the audit trail is off: every call does nothing."""

    async def login(self, *args: Any, **kwargs: Any) -> None:
        return None

    @contextlib.asynccontextmanager
    async def token(self, *args: Any, **kwargs: Any
                    ) -> AsyncIterator[Callable[[Mapping[str, Any]], None]]:
        yield lambda body: None

    @contextlib.asynccontextmanager
    async def revoke(self, *args: Any, **kwargs: Any) -> AsyncIterator[None]:
        yield

    async def consent(self, *args: Any, **kwargs: Any) -> None:
        return None

    @contextlib.asynccontextmanager
    async def folded(self) -> AsyncIterator[None]:
        yield

    async def received(self, *args: Any, **kwargs: Any) -> None:
        return None


SILENT = _Silent()


def audit_of(owner: Any) -> AuditHooks | _Silent:
    """The hooks installed on `owner` (the AuthServer, the HL7 v2 bridge's interactions),
    or the silent ones."""
    hooks = getattr(owner, "audit", None)
    if isinstance(hooks, AuditHooks):
        return hooks
    observer = getattr(owner, "observer", None)  # an Interactions with a Recorder
    hooks = getattr(observer, "hooks", None)
    return hooks if isinstance(hooks, AuditHooks) else SILENT


def _failure(exc: Exception) -> ev.Outcome:
    status = getattr(exc, "status", None)
    text = getattr(exc, "description", None) or getattr(exc, "diagnostics", None) or str(exc)
    error = getattr(exc, "error", None)
    if error and text and error not in text:
        text = f"{error}: {text}"
    return ev.Outcome(status if isinstance(status, int) and status >= 400 else 400, text)


def _claims(token: Any) -> dict[str, Any]:
    """A JWT's payload, unverified: the token was just issued (or is being revoked) by
    this server; the claims only name who it belongs to. {} for opaque tokens."""
    if not isinstance(token, str) or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _user_of(claims: Mapping[str, Any]) -> str | None:
    sub = claims.get("sub")
    if not isinstance(sub, str) or sub == claims.get("client_id"):
        return None  # a backend service's token: the client is the subject
    return sub


def _client_of(request: Any, form: Mapping[str, str]) -> str | None:
    if form.get("client_id"):
        return form["client_id"]
    assertion = _claims(form.get("client_assertion"))
    if isinstance(assertion.get("iss"), str):
        return assertion["iss"]
    authorization = request.headers.get("authorization", "") if request is not None else ""
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        from urllib.parse import unquote

        return unquote(decoded.partition(":")[0]) or None
    return None
