"""The authorization endpoint's flow: validate the request, then login, patient choice and
consent, then a single-use code bound to client, redirect URI and PKCE challenge.

Until the client and its exact redirect URI are known to be registered, nothing redirects:
errors are shown as a page (RFC 6749 §4.1.2.1), so the endpoint cannot be used to bounce a
browser anywhere. After that, errors go back to the app with `error` and `state`. A
pending request is a document bound to the browser that started it; each page moves it on
one step, and `next_url` says where it goes next.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import urlencode

from fhirpm.auth.clients import Client, Clients
from fhirpm.auth.launch import LaunchContext, Launches
from fhirpm.auth.records import CODES, REQUESTS, AuthDocs, digest, random_token
from fhirpm.auth.scopes import ADMIN_SCOPE, LAUNCH_SCOPES, ScopeSet, within
from fhirpm.auth.sessions import Session
from fhirpm.auth.tokens import Grant
from fhirpm.auth.users import User, Users
from fhirpm.fhir import jsonio
from fhirpm.fhir.types import is_valid_id
from fhirpm.storage.port import HistoryQuery, ResourceStore

PENDING_SECONDS = 600
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43,128}$")
_PICKS_PATIENT = (None, "Practitioner", "PractitionerRole", "Person")


class PageError(Exception):
    """Shown to the user as an error page; never a redirect."""


class ClientRedirect(Exception):
    """An error to send back to the app's redirect URI."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@dataclass(frozen=True, slots=True)
class Pending:
    """An authorization request between its arrival and the code."""

    txn: str
    browser: str
    client_id: str
    client_name: str
    redirect_uri: str
    state: str
    code_challenge: str
    scope: str  # what may be granted: requested, within the client's registration
    nonce: str | None = None
    launch: dict[str, Any] | None = None  # a resolved EHR launch context
    patient: str | None = None  # chosen at the picker (or the user's own)

    @property
    def scopes(self) -> ScopeSet:
        return ScopeSet.parse(self.scope)

    @property
    def context(self) -> LaunchContext | None:
        return LaunchContext(**self.launch) if self.launch else None

    @property
    def needs_patient(self) -> bool:
        scopes = self.scopes
        wants = "launch/patient" in scopes or "patient" in scopes.contexts
        context = self.context
        return wants and not (context and context.patient) and not self.patient


def redirect_with(uri: str, params: dict[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


class AuthorizeFlow:
    def __init__(self, docs: AuthDocs, clients: Clients, users: Users, launches: Launches,
                 store: ResourceStore, *, fhir_base: str, code_seconds: int) -> None:
        self.docs = docs
        self.clients = clients
        self.users = users
        self.launches = launches
        self.store = store
        self.fhir_base = fhir_base
        self.code_seconds = code_seconds

    # -- the request ------------------------------------------------------------------

    async def start(self, params: dict[str, str], session: Session) -> Pending:
        """Validate an authorization request and keep it pending for this browser."""
        client = await self.clients.get(params.get("client_id"))
        if client is None:
            raise PageError("This application is not registered here (unknown client_id).")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise PageError("The redirect_uri is not one this application registered.")
        state = params.get("state")

        def fail(error: str, description: str) -> ClientRedirect:
            return ClientRedirect(redirect_with(redirect_uri, {
                "error": error, "error_description": description, "state": state}))

        if params.get("response_type") != "code":
            raise fail("unsupported_response_type", "response_type must be code")
        if "authorization_code" not in client.grant_types:
            raise fail("unauthorized_client", "this client may not use the code grant")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(challenge):
            raise fail("invalid_request", "PKCE is required: code_challenge with "
                                          "code_challenge_method=S256")
        if (params.get("aud") or "").rstrip("/") != self.fhir_base:
            raise fail("invalid_request", f"aud must be this FHIR server: {self.fhir_base}")
        if not state:
            raise fail("invalid_request", "state is required")
        launch = None
        if params.get("launch"):
            launch = await self.launches.resolve(params["launch"], client.client_id)
            if launch is None:
                raise fail("invalid_request", "unknown or expired launch")
        scope = self._offerable(ScopeSet.parse(params.get("scope")), client, launch)
        if not scope.resource and not scope.other - LAUNCH_SCOPES:
            raise fail("invalid_scope", "none of the requested scopes can be granted")
        pending = Pending(
            txn=random_token(24), browser=session.browser, client_id=client.client_id,
            client_name=client.name, redirect_uri=redirect_uri, state=state,
            code_challenge=challenge, scope=str(scope), nonce=params.get("nonce"),
            launch=asdict(launch) if launch else None)
        await self._save(pending, expected_rev=0)
        return pending

    @staticmethod
    def _offerable(requested: ScopeSet, client: Client, launch: LaunchContext | None) -> ScopeSet:
        """Requested scopes this client may be granted in a user's authorization: never
        system/ (backend services only), `launch` only with an EHR launch."""
        allowed = within(requested, ScopeSet.parse(client.scope))
        keep = [s for s in allowed.order
                if not s.startswith("system/") and (s != "launch" or launch is not None)]
        return ScopeSet.parse(" ".join(keep))

    async def load(self, txn: str | None, session: Session | None) -> Pending:
        record = await self.docs.get(REQUESTS, txn) if txn and len(txn) < 100 else None
        if record is None:
            raise PageError("This sign-in request has expired or is unknown; "
                            "please start again from the application.")
        pending = Pending(**record.body)
        if session is None or session.browser != pending.browser:
            raise PageError("This sign-in request belongs to another browser session.")
        return pending

    async def _save(self, pending: Pending, expected_rev: int | None = None) -> None:
        await self.docs.put(REQUESTS, pending.txn, asdict(pending), expected_rev=expected_rev,
                            expires_at=int(time.time()) + PENDING_SECONDS)

    # -- the steps --------------------------------------------------------------------

    async def next_url(self, pending: Pending, session: Session) -> str:
        """Where the browser goes next: login, patient picker, consent."""
        here = f"/continue?{urlencode({'txn': pending.txn})}"
        if session.user is None:
            return f"/login?{urlencode({'next': here})}"
        user = await self.users.get(session.user)
        context = pending.context
        if user is None or (context and context.user and context.user != user.username):
            raise ClientRedirect(self.error_url(pending, "access_denied",
                                                "the launch belongs to another user"))
        if ADMIN_SCOPE in pending.scopes and not user.may_administer:  # not even offered
            pending = replace(pending, scope=str(_without_admin(pending.scopes)))
            await self._save(pending)
        if pending.needs_patient:
            own = await self._own_patient(user)
            if own is not None:
                await self._save(replace(pending, patient=own))
            elif user.fhir_user_type in _PICKS_PATIENT:
                return f"/patient?{urlencode({'txn': pending.txn})}"
            else:
                raise ClientRedirect(self.error_url(pending, "access_denied",
                                                    "no patient is linked to this user"))
        return f"/consent?{urlencode({'txn': pending.txn})}"

    async def _own_patient(self, user: User) -> str | None:
        """A patient user's own record; a related person's patient."""
        if user.fhir_user_type == "Patient":
            return user.fhir_user.split("/", 1)[1]  # type: ignore[union-attr]
        if user.fhir_user_type == "RelatedPerson":
            found = await self.store.read(*user.fhir_user.split("/", 1))  # type: ignore[union-attr]
            if found is not None and not found.deleted:
                ref = (jsonio.loads(found.body).get("patient") or {}).get("reference", "")
                if ref.startswith("Patient/"):
                    return ref.split("/", 1)[1]
        return None

    async def patient_choices(self, limit: int = 50) -> list[tuple[str, str]]:
        """(id, label) for the picker: the most recently changed patients on file (the
        change history is the one listing every store keeps, search or not)."""
        versions = await self.store.history(HistoryQuery(type="Patient", count=limit * 4))
        seen: dict[str, str] = {}
        for v in versions:  # newest first: the first version met is the current one
            if v.id not in seen:
                seen[v.id] = "" if v.deleted else patient_label(jsonio.loads(v.body))
        return [(id_, label) for id_, label in seen.items() if label][:limit]

    async def patient_name(self, patient: str | None) -> str | None:
        """"Family, Given (birthDate)" of a patient on file, for the consent page."""
        found = await self.store.read("Patient", patient) if patient and is_valid_id(
            patient) else None
        if found is None or found.deleted:
            return patient
        return f"{patient_label(jsonio.loads(found.body))} · Patient/{patient}"

    async def choose_patient(self, pending: Pending, session: Session, patient: str) -> str:
        user = await self.users.get(session.user or "")
        if user is None or user.fhir_user_type not in _PICKS_PATIENT:
            raise PageError("Only practitioners choose a patient here.")
        found = await self.store.read("Patient", patient) if is_valid_id(patient) else None
        if found is None or found.deleted:
            raise PageError(f"There is no patient with id {patient!r}.")
        chosen = replace(pending, patient=patient)
        await self._save(chosen)
        return await self.next_url(chosen, session)

    async def decide(self, pending: Pending, session: Session, chosen: list[str],
                     allow: bool) -> str:
        """The user's answer at the consent page: a code, or access_denied."""
        await self.docs.delete(REQUESTS, pending.txn)
        granted = pending.scopes.only(set(chosen))
        if not allow or not granted:
            return self.error_url(pending, "access_denied", "the user declined")
        user = await self.users.get(session.user or "")
        if user is None:
            raise PageError("Please sign in again.")
        context = pending.context
        patient = context.patient if context and context.patient else pending.patient
        if not user.may_administer or patient:  # a patient-context token never administers
            granted = _without_admin(granted)
            if not granted:
                return self.error_url(pending, "access_denied", "nothing left to grant")
        grant = Grant(
            client_id=pending.client_id, sub=user.username, scope=str(granted),
            fhir_user=user.fhir_user, patient=patient,
            encounter=context.encounter if context else None,
            fhir_context=context.fhir_context if context else (),
            need_patient_banner=context.need_patient_banner if context else True,
            auth_time=session.auth_time)
        code = random_token(32)
        await self.docs.put(CODES, digest(code), {
            "grant": grant.to_json(), "redirect_uri": pending.redirect_uri,
            "code_challenge": pending.code_challenge, "nonce": pending.nonce, "used": False},
            expected_rev=0, expires_at=int(time.time()) + self.code_seconds)
        return redirect_with(pending.redirect_uri, {"code": code, "state": pending.state})

    def error_url(self, pending: Pending, error: str, description: str) -> str:
        return redirect_with(pending.redirect_uri, {
            "error": error, "error_description": description, "state": pending.state})


def patient_label(resource: dict[str, Any]) -> str:
    """"Family, Given (birthDate)" for the picker."""
    names = resource.get("name") or [{}]
    name = names[0] if isinstance(names[0], dict) else {}
    given = " ".join(g for g in name.get("given", []) if isinstance(g, str))
    text = name.get("text") or ", ".join(p for p in (name.get("family"), given) if p)
    born = resource.get("birthDate")
    return f"{text or 'Unnamed'}{f' ({born})' if born else ''}"


def _without_admin(scopes: ScopeSet) -> ScopeSet:
    return scopes.only(set(scopes.order) - {ADMIN_SCOPE})
