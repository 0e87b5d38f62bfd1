"""The audit write path: every FHIR interaction, login, token, consent decision and HL7 v2
message leaves an AuditEvent, stored before the answer goes out.

FHIR interactions are recorded in one place: `Interactions.dispatch` hands each request to
`Recorder.dispatch` (the app sets `Interactions.observer`), so REST calls, bundle entries
and operations' own sub-requests are all seen the same way. The writes of an HL7 v2
message are its own steps (`folded`): its one event (DICOM Import) lists the versions they
made, as an operation's event lists what its sub-requests touched.

Where an event is stored:
- a write (create, update, patch, delete, conditional ones too) runs in a unit of work the
  recorder opens (or the caller's: a transaction or batch group), and its events are put
  into that same unit: the write and its record commit together or not at all;
- reads, searches, histories, operations and every failure are made durable before the
  answer: appended to the journal (`journal.Journal`, the server's default), from where
  they are sealed into the chain in bulk, or else stored by group commit
  (`batch.GroupCommit`), the answer waiting until its events are committed. Events of bundle
  entries and of requests nested in another (deferred) are committed together when the
  outermost request ends; a failed write's event goes there too, since its unit rolled back.

A caller that holds a unit of work and dispatches a request must pass that unit
(`FhirRequest.uow`): a request without one waits for its group commit, which on SQLite
needs the write lock the caller holds.

Fail-closed (`fail_closed`, the default): a request whose events cannot be stored fails with
503 instead of answering unrecorded. AuditEvents themselves cannot be written through the
API (405): only this module appends them (`trail.Trail`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from fhirpm.audit import events as ev
from fhirpm.audit import record as rec
from fhirpm.audit.batch import GroupCommit
from fhirpm.audit.patients import patient_params, patients_of
from fhirpm.audit.trail import TYPE, Trail
from fhirpm.errors import Category, FhirError
from fhirpm.repository.interactions import path_shape
from fhirpm.repository.service import now_instant
from fhirpm.storage.port import AuditDraft, StoreError, VersionConflict

if TYPE_CHECKING:
    from fhirpm.audit.journal import Journal
    from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
    from fhirpm.search.extract import Indexer

log = logging.getLogger("fhirpm.audit")

Inner = Callable[["FhirRequest"], Awaitable["FhirResponse"]]
# the current HTTP exchange (request id, client address), from the operations layer
Exchange = Callable[[], Any]

_WRITES = {"create", "update", "patch", "delete"}
_READ_METHODS = frozenset({"GET", "HEAD"})
_BY_METHOD = {"GET": "read", "HEAD": "read", "POST": "create", "PUT": "update",
              "PATCH": "patch", "DELETE": "delete"}
# path shape -> method -> interaction (None: not audited)
_SHAPES: dict[str, dict[str, str | None]] = {
    "": {"GET": "search-system", "POST": "batch"},
    "metadata": {"GET": None},
    "_history": {"GET": "history-system"},
    "_search": {"POST": "search-system"},
    "$": {"GET": "operation", "POST": "operation"},
    "T": {"GET": "search-type", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"},
    "T/_search": {"POST": "search-type"},
    "T/_history": {"GET": "history-type"},
    "T/$": {"GET": "operation", "POST": "operation"},
    "T/I": {"GET": "read", "HEAD": "read", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"},
    "T/I/_history": {"GET": "history-instance"},
    "T/I/_history/V": {"GET": "vread", "HEAD": "vread"},
    "T/I/$": {"GET": "operation", "POST": "operation"},
    "T/I/C": {"GET": "search-type"},
}


@dataclass
class _Scope:
    """The outermost request being recorded, seen by the requests nested in it."""

    who: ev.Who
    nested: bool  # nested requests are recorded on their own (bundle entries, operations)
    deferred: list[AuditDraft] = field(default_factory=list)  # stored when it ends
    touched: list[str] = field(default_factory=list)  # resources its folded sub-requests hit
    ended: bool = False  # a task it spawned may outlive it: then it is nobody's scope


_scope: ContextVar[_Scope | None] = ContextVar("fhirpm_audit_scope", default=None)


def unavailable() -> FhirError:
    return FhirError(Category.UNAVAILABLE, "The audit trail could not record this request, "
                     "so it was not carried out or answered; try again later")


class Recorder:
    """Builds and stores the AuditEvents of everything that happens (module doc)."""

    def __init__(self, trail: Trail, server: ev.Server, indexer: Indexer, *,
                 fail_closed: bool = True, batch_max: int = 500,
                 exchange: Exchange | None = None) -> None:
        self.trail = trail
        self.server = server
        self.indexer = indexer
        self.fail_closed = fail_closed
        self.exchange = exchange or (lambda: None)
        self.batch = GroupCommit(trail.commit, max_events=batch_max)
        self.hooks: Any = None  # the AuditHooks of the auth server and HL7 v2 (wiring)
        self._patients_by_version: dict[tuple[str, str, int], list[str]] = {}

    # -- storing -------------------------------------------------------------------------

    async def record(self, events: list[dict[str, Any]]) -> None:
        """Store whole `events` (logins, tokens, HL7 v2 ...) now (group commit) and wait;
        fail-closed raises 503 when they cannot be stored. Inside a recorded request they
        are stored when it ends."""
        drafts = self._built(lambda: [rec.whole(e) for e in events])
        if not drafts:
            return
        scope = _scope.get()
        if scope is not None:
            scope.deferred.extend(drafts)
            return
        await self._submit(drafts)

    async def _submit(self, events: list[AuditDraft]) -> None:
        try:
            journal = self.trail.open_journal
            if journal is not None:  # durable on return (journal.py)
                journal.append([event.payload for event in events])
            else:
                await self.batch.submit(events)
        except Exception as exc:
            self._not_stored(exc)

    def _not_stored(self, exc: Exception) -> None:
        log.error("AuditEvents could not be stored: %s", exc)
        if self.fail_closed:
            raise unavailable() from None

    # -- who and when ---------------------------------------------------------------------

    def who(self, principal: Any = None, *, client_id: str | None = None,
            user: str | None = None, fhir_user: str | None = None) -> ev.Who:
        """The requesting side: a Principal (None or Anonymous: nobody known), or explicit
        client and user (the authorization server's pages), with the current exchange's
        request id and client address."""
        exchange = self.exchange()
        address = getattr(exchange, "client", None)
        request_id = getattr(exchange, "request_id", None)
        if principal is not None and hasattr(principal, "client_id"):
            return ev.Who.from_principal(principal, address, request_id)
        return ev.Who(client_id, user, fhir_user, address, request_id)

    @contextlib.asynccontextmanager
    async def folded(self) -> AsyncIterator[None]:
        """Requests dispatched inside are steps of the caller's own event (an HL7 v2
        message's writes: its receipt lists what they wrote), not events of their own.
        Whole events recorded meanwhile are stored when it ends."""
        scope = _Scope(self.who(), nested=False)
        token = _scope.set(scope)
        try:
            yield
        finally:
            scope.ended = True
            _scope.reset(token)
        if scope.deferred:
            await self._submit(scope.deferred)

    # -- FHIR interactions: the dispatch hook ------------------------------------------------

    async def dispatch(self, ix: Interactions, req: FhirRequest, inner: Inner) -> FhirResponse:
        outer = _scope.get()
        if outer is not None and outer.ended:
            outer = None
        if outer is None and req.uow is None and req.method in _READ_METHODS:
            parts = req.path.split("/")
            interaction = _read_kind(parts)
            if interaction is not None:
                return await self._read(req, parts, interaction, inner)
        if outer is not None and not outer.nested:  # a handler's own sub-request: folded in
            response = await inner(req)
            if response.version is not None:
                outer.touched.append(_reference(response.version))
            return response
        parts = [p for p in req.path.split("/") if p]
        interaction = _interaction(req.method, parts)
        if interaction is None:
            return await inner(req)
        who = self._request_who(req, outer)
        scope = _Scope(who, nested=interaction in ("batch", "operation"))
        if outer is not None:
            scope.deferred = outer.deferred  # stored when the outermost request ends
        token = _scope.set(scope)
        failure: Exception | None = None
        try:
            response, pending = await self._run(ix, req, parts, interaction, scope, inner)
        except Exception as exc:
            failure = exc
            status, text = ((exc.status, exc.diagnostics) if isinstance(exc, FhirError)
                            else (500, "Internal server error"))
            pending = self._built(lambda: self._failure_events(req, parts, interaction, who,
                                                               status, text))
        finally:
            _scope.reset(token)
        try:
            if failure is None:
                await self._store(req, outer, scope, pending, failed=False)
                return response
            # not recorded (logged): the request failed anyway and answers its own error
            with contextlib.suppress(FhirError):
                await self._store(req, outer, scope, pending, failed=True)
            raise failure
        finally:
            scope.ended = True

    async def _read(self, req: FhirRequest, parts: list[str], interaction: str,
                    inner: Inner) -> FhirResponse:
        """A read or vread asked on its own: most of what the trail records, so its record
        is made directly (a read nests no requests: no scope, nothing deferred), the same
        record `_events` would make."""
        try:
            response = await inner(req)
        except Exception as exc:
            await self._failed(req, parts, interaction, self._request_who(req, None), exc)
            raise
        version = response.version
        journal = self.trail.open_journal
        if version is not None and journal is not None:
            self._journal_read(journal, req, parts, interaction, version, response.status)
            return response
        try:
            if version is None:  # not a resource's version (a handler's own answer)
                drafts = self._events(req, parts, interaction,
                                      _Scope(self._request_who(req, None), nested=False),
                                      response)
            else:
                drafts = rec.read(interaction, version.type, version.id, version.version,
                                  self._patients_of_version(version), _query(req, parts),
                                  response.status, self._request_who(req, None),
                                  self.server, now_instant())
        except Exception:
            drafts = self._unbuilt()
        await self._submit(drafts)
        return response

    def _journal_read(self, journal: Journal, req: FhirRequest, parts: list[str],
                      interaction: str, version: Any, status: int) -> None:
        """The commonest record, the shortest way: its payloads alone (`record.read_payloads`),
        copied into the journal."""
        try:
            payloads = rec.read_payloads(
                interaction, version.type, version.id, version.version,
                self._patients_of_version(version), _query(req, parts), status,
                self._request_who(req, None), self.server, now_instant())
        except Exception:
            self._unbuilt()
            return
        try:
            journal.append(payloads)
        except Exception as exc:
            self._not_stored(exc)

    async def _failed(self, req: FhirRequest, parts: list[str], interaction: str,
                      who: ev.Who, exc: Exception) -> None:
        """Store a failed request's record; not storing it is only logged (the request
        answers its own error anyway)."""
        status, text = ((exc.status, exc.diagnostics) if isinstance(exc, FhirError)
                        else (500, "Internal server error"))
        drafts = self._built(lambda: self._failure_events(req, parts, interaction, who,
                                                          status, text))
        with contextlib.suppress(FhirError):
            await self._submit(drafts)

    async def _run(self, ix: Interactions, req: FhirRequest, parts: list[str],
                   interaction: str, scope: _Scope, inner: Inner
                   ) -> tuple[FhirResponse, list[AuditDraft]]:
        """Run the request; (its response, its events still to be stored)."""
        if parts and parts[0] == TYPE and interaction in _WRITES:
            raise FhirError(Category.METHOD_NOT_ALLOWED,
                            "AuditEvents are append-only: only the server records them",
                            headers={"Allow": "GET"})
        if interaction not in _WRITES:
            response = await inner(req)
            return response, self._built(lambda: self._events(req, parts, interaction, scope,
                                                               response))
        if req.uow is not None:  # a transaction or batch group: its unit, its commit
            response = await inner(req)
            await self._append_write(ix, req.uow, req, parts, interaction, scope, response)
            return response, []
        for attempt in range(_ATTEMPTS):
            try:  # the unit Repository.unit(None) would open, and its error mapping
                async with ix.repo.store.unit_of_work() as unit:
                    response = await inner(replace(req, uow=unit))
                    await self._append_write(ix, unit, req, parts, interaction, scope,
                                             response)
            except VersionConflict as exc:
                # The write lost a race at commit (another writer changed what it read):
                # nothing was applied, so the request runs again, as a client told 409
                # would retry it. Refusals a handler raised are FhirErrors.
                if attempt == _ATTEMPTS - 1:
                    raise FhirError(Category.CONFLICT,
                                    f"Concurrent write, try again: {exc}") from None
                scope.touched.clear()
                await _backoff(attempt)
                continue
            except StoreError as exc:
                raise FhirError(Category.UNAVAILABLE, f"The store failed: {exc}") from None
            return response, []
        raise AssertionError("unreachable")

    async def _append_write(self, ix: Interactions, unit: Any, req: FhirRequest,
                            parts: list[str], interaction: str, scope: _Scope,
                            response: FhirResponse) -> None:
        patients: list[str] = []
        gone = response.version
        if gone is not None and gone.deleted and gone.version > 1:
            # a deletion's patients are those of the version it deleted
            before = await ix.repo.store.vread(gone.type, gone.id, gone.version - 1)
            if before is not None:
                patients = self._patients_of_version(before)
        await self.trail.append(unit, self._built(
            lambda: self._events(req, parts, interaction, scope, response, patients)))

    def _built(self, build: Callable[[], list[AuditDraft]]) -> list[AuditDraft]:
        try:
            return build()
        except Exception:
            return self._unbuilt()

    def _unbuilt(self) -> list[AuditDraft]:
        """In an `except` block: an event could not be built. Fail-closed refuses the
        request (503); otherwise it goes on unrecorded (logged)."""
        log.exception("an AuditEvent could not be built")
        if self.fail_closed:
            raise unavailable() from None
        return []

    async def _store(self, req: FhirRequest, outer: _Scope | None, scope: _Scope,
                     events: list[AuditDraft], *, failed: bool) -> None:
        """Store a request's events: nested ones when the outermost request ends, the
        outermost's (with everything deferred to it) now."""
        if outer is not None:
            scope.deferred.extend(events)  # the outermost request's list
            return
        events = [*scope.deferred, *events]
        scope.deferred.clear()
        if not events:
            return
        if req.uow is not None:
            # The caller holds a unit of work: a group commit cannot be waited for inside
            # it (on SQLite the group would wait for that unit's lock). Successes commit
            # with the caller's unit; failures (whose unit will roll back) as soon as can be.
            if failed and self.trail.open_journal is not None:
                with contextlib.suppress(FhirError):  # logged; the request fails anyway
                    await self._submit(events)
            elif failed:
                self.batch.enqueue(events)
            else:
                await self.trail.append(req.uow, events)
            return
        await self._submit(events)

    def _request_who(self, req: FhirRequest, outer: _Scope | None) -> ev.Who:
        if req.principal is None and outer is not None:
            return outer.who  # a bundle entry or an operation's sub-request: the same caller
        if req.principal is None:
            return self.who(client_id="fhirpm")  # trusted internal (loader, HL7 v2 inbound)
        return self.who(req.principal)

    # -- events of one interaction -----------------------------------------------------

    def _events(self, req: FhirRequest, parts: list[str], interaction: str, scope: _Scope,
                response: FhirResponse, known: list[str] | None = None
                ) -> list[AuditDraft]:
        resources: list[str] = []
        patients: list[str] = list(known or ())
        version = response.version
        if interaction == "batch":
            interaction = _bundle_kind(response.body)
        elif version is not None:
            resources.append(_reference(version))
            patients.extend(self._patients_of_version(version, response.entries))
        elif response.body is not None and interaction not in ("batch", "transaction"):
            patients.extend(self._patients_of_bundle(response.body))
        if interaction == "operation" or interaction.startswith("history-instance"):
            target = "/".join(parts[:2]) if len(parts) >= 3 else None
            if target and target not in resources:
                resources.insert(0, target)
                if parts[0] == "Patient":
                    patients.insert(0, parts[1])
        resources.extend(r for r in scope.touched if r not in resources)
        access = ev.Access(interaction, tuple(resources), tuple(dict.fromkeys(patients)),
                           _query(req, parts), _operation(parts))
        return rec.rest(access, scope.who, self.server, ev.Outcome(response.status),
                        now_instant())

    def _failure_events(self, req: FhirRequest, parts: list[str], interaction: str,
                        who: ev.Who, status: int, text: str) -> list[AuditDraft]:
        if interaction == "batch":
            interaction = "transaction"  # a batch answers 200 whatever its entries do
        resources: tuple[str, ...] = ()
        patients: tuple[str, ...] = ()
        if len(parts) >= 2 and not parts[1].startswith(("$", "_")):
            resources = (f"{parts[0]}/{parts[1]}",)
            if parts[0] == "Patient":
                patients = (parts[1],)
        access = ev.Access(interaction, resources, patients, _query(req, parts),
                           _operation(parts))
        return rec.rest(access, who, self.server, ev.Outcome(status, text), now_instant())

    def _patients_of_version(self, version: Any, entries: Any = None) -> list[str]:
        """The patients of a stored version; `entries`, its index entries when the write
        that stored it has them at hand (no parse, no extraction: ~50 us per write)."""
        if version.type == "Patient":
            return [version.id]
        if not version.body or not patient_params(version.type):
            return []  # a deletion's patients: see _deleted_patients
        if entries is not None:
            return list(patients_of(version.type, version.id, entries))
        # a version never changes: reads of the same one (the common case) reuse the answer
        key = (version.type, version.id, version.version)
        found = self._patients_by_version.get(key)
        if found is None:
            if len(self._patients_by_version) >= _PATIENTS_CACHED:
                self._patients_by_version.clear()
            found = self._patients_by_version[key] = self._patients_of(
                version.type, version.id, orjson.loads(version.body))
        return found

    def _patients_of(self, type_: str, id_: str, resource: dict[str, Any]) -> list[str]:
        if type_ == "Patient":
            return [id_]
        params = patient_params(type_)
        if not params:
            return []
        entries = self.indexer.extract(type_, resource, only=params)
        return list(patients_of(type_, id_, entries))

    def _patients_of_bundle(self, body: bytes) -> list[str]:
        if b"Patient" not in body:
            # no Patient resource and no reference to one (a patient reference always
            # names the type): nothing to extract ($find's proposals, directory searches)
            return []
        try:
            bundle = orjson.loads(body)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(bundle, dict):
            return []
        if bundle.get("resourceType") != "Bundle":
            type_, id_ = bundle.get("resourceType"), bundle.get("id")
            if isinstance(type_, str) and isinstance(id_, str):
                return self._patients_of(type_, id_, bundle)
            return []
        found: list[str] = []
        for entry in bundle.get("entry") or ():
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                found.extend(self._patients_of(resource["resourceType"],
                                               str(resource.get("id", "")), resource))
        return found


_ATTEMPTS = 5
_PATIENTS_CACHED = 20_000  # versions whose patients are remembered (then start afresh)


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))


def _read_kind(parts: list[str]) -> str | None:
    """"read" or "vread" when `parts` (of a GET or HEAD, no empty segment) have the shape
    `_interaction` calls one, else None (a shortcut: most requests are reads)."""
    return _READS.get(path_shape(parts)) if all(parts) else None


_READS = {"T/I": "read", "T/I/_history/V": "vread"}


def _interaction(method: str, parts: list[str]) -> str | None:
    shape = path_shape(parts)
    by_method = _SHAPES.get(shape)
    if by_method is None or method not in by_method:
        return _BY_METHOD.get(method, "operation")  # refused anyway: still recorded
    return by_method[method]


def _reference(version: Any) -> str:
    return f"{version.type}/{version.id}/_history/{version.version}"


def _operation(parts: list[str]) -> str | None:
    return next((p for p in parts if p.startswith("$")), None)


def _query(req: FhirRequest, parts: list[str]) -> str | None:
    """What was asked, relative to the base (searches, histories, operations)."""
    query = req.path
    params = urlencode(req.params) if req.params else ""
    if req.method == "POST" and parts and parts[-1] == "_search" and req.body:
        form = req.body.decode("utf-8", "replace")
        params = f"{params}&{form}" if params else form
    return f"{query}?{params}" if params else query


def _bundle_kind(body: bytes | None) -> str:
    head = (body or b"")[:400]
    return "batch" if b'"batch-response"' in head else "transaction"
