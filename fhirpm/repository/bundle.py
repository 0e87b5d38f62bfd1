"""Batch and transaction bundles (POST [base]).

Every entry becomes a `FhirRequest` dispatched through `Interactions.dispatch`, so an entry
behaves exactly like the same HTTP request (conditional headers included: `ifNoneExist`,
`ifMatch`, `ifNoneMatch`, `ifModifiedSince` become `if-none-exist`, ...). Errors are
FhirErrors rendered per entry with the same OperationOutcome rendering as HTTP.

batch: entries run in the same order as a transaction's (the spec asks for it), each
succeeding or failing alone with its own status and OperationOutcome. Consecutive writes
share a unit of work to commit once per group; an entry that fails after writing makes
its group replay entry by entry, so grouping is invisible to clients. Entries may not
reference each other (a `urn:uuid:` reference in a batch is left as written).

transaction: every write runs in ONE unit of work. First, POST entries are given ids
(a conditional create that matches takes the match's id), conditional PUTs with a `urn:`
fullUrl resolve their target, and every `Reference.reference` naming an entry's fullUrl, or
a conditional reference (`Patient?identifier=s|v`, resolved against what is stored), is
rewritten to `Type/id`. Writes then run DELETE, POST, PUT/PATCH; a failure anywhere rolls
everything back and the answer is the failing entry's OperationOutcome and status. GET/HEAD
entries run last, after the commit, so they see the transaction's writes; being reads,
their failures are reported in their entry and change nothing.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from fhirpm.errors import Category, FhirError
from fhirpm.fhir.bundles import bundle as make_bundle
from fhirpm.repository import prepare, references
from fhirpm.repository.bundle_entries import (
    Entry,
    bundle_type,
    entry_failure,
    error_entry,
    parse_entries,
    response_entry,
)
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from fhirpm.repository.service import new_id, now_instant
from fhirpm.storage.port import UnitOfWork

log = logging.getLogger("fhirpm.bundle")

# transaction processing order (FHIR R4 http.html#trules); reads run after the commit
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2}
_PLACEHOLDER = ("urn:uuid:", "urn:oid:")
DEFAULT_MAX_ENTRIES = 10_000


class BundleProcessor:
    """The POST [base] handler, with its configured limits."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries

    async def __call__(self, ix: Interactions, req: FhirRequest,
                       parts: list[str]) -> FhirResponse:
        body = req.parsed_body()
        kind = bundle_type(body)
        entries = parse_entries(body, req.base, self.max_entries,
                                principal=req.principal)
        if kind == "batch":
            return await run_batch(ix, req, entries)
        return await run_transaction(ix, req, entries)


def install(interactions: Interactions, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
    """Claim POST [base] for bundles, and PATCH, which transactions carry as entries."""
    from fhirpm.repository import patch

    patch.install(interactions)
    interactions.system_post = BundleProcessor(max_entries)


# -- batch ----------------------------------------------------------------------------


async def run_batch(ix: Interactions, req: FhirRequest, entries: list[Entry]) -> FhirResponse:
    """Writes in the spec's order (as for transactions), then reads; each entry answers
    for itself. Consecutive writes share a unit of work (`_run_group`), which changes
    nothing a client can see but commits once per group instead of once per entry."""
    prefer = req.headers.get("prefer")
    resolved: dict[str, str] = {}
    answers: dict[int, dict[str, Any]] = {}
    writes = sorted((e for e in entries if e.method in _ORDER), key=lambda e: _ORDER[e.method])
    for start in range(0, len(writes), BATCH_GROUP):
        group = writes[start:start + BATCH_GROUP]
        answers.update(await _run_group(ix, req, group, prefer, resolved))
    for entry in entries:
        if entry.method in ("GET", "HEAD"):
            answers[entry.index] = await _batch_entry(ix, req, entry, prefer, resolved, None)
    out = [answers[e.index] for e in entries]
    return FhirResponse(200, make_bundle("batch-response", out, timestamp=now_instant()))


BATCH_GROUP = 100  # batch writes committed together (each still succeeds or fails alone)


class _Replay(Exception):
    """A batch entry failed after writing: its group is replayed entry by entry."""


async def _run_group(ix: Interactions, req: FhirRequest, group: list[Entry],
                     prefer: str | None, resolved: dict[str, str]) -> dict[int, dict[str, Any]]:
    """Run batch writes in ONE unit of work, each entry still succeeding or failing alone.

    A commit per entry rewrites every index page the entry touched, which made batch
    ingest several times slower than a transaction of the same resources. An entry that
    fails before writing anything (validation, a 404, a 412) simply answers with its
    error; one that fails after writing something, or any unexpected error, rolls the
    group back and replays it with one unit per entry, exactly as if never grouped.
    """
    answers: dict[int, dict[str, Any]] = {}
    try:
        async with ix.repo.unit(None) as raw:
            unit = _CountingUnit(raw)
            for entry in group:
                before = unit.puts
                try:
                    answers[entry.index] = await _batch_entry(ix, req, entry, prefer,
                                                              resolved, unit, reraise=True)
                except FhirError as err:
                    if unit.puts != before:
                        raise _Replay from None
                    answers[entry.index] = error_entry(err)
    except Exception:  # _Replay, an unexpected error, or a failed commit
        return {e.index: await _batch_entry(ix, req, e, prefer, resolved, None)
                for e in group}
    return answers


async def _batch_entry(ix: Interactions, req: FhirRequest, entry: Entry, prefer: str | None,
                       resolved: dict[str, str], uow: UnitOfWork | None, *,
                       reraise: bool = False) -> dict[str, Any]:
    try:
        await _resolve_references(ix, entry, references.ReferenceMap(), resolved, uow,
                                  strict=False)
        answer = await ix.dispatch(entry.request(req.base, prefer, uow))
        return response_entry(req.base, entry, answer, prefer)
    except FhirError as err:
        if reraise:
            raise
        return error_entry(err)
    except Exception:  # one broken entry must not sink the others
        if reraise:
            raise
        log.exception("batch entry %d failed unexpectedly", entry.index)
        return error_entry(FhirError(Category.INTERNAL,
                                     "Internal server error; see the server log"))


class _CountingUnit:
    """A unit of work that counts puts, so a failed entry is known to have written nothing."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        self.puts = 0

    async def put(self, *args: Any, **kwargs: Any) -> None:
        self.puts += 1  # counted before the call: a put that raised may have written
        await self._unit.put(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unit, name)


# -- transaction ----------------------------------------------------------------------


async def run_transaction(ix: Interactions, req: FhirRequest,
                          entries: list[Entry]) -> FhirResponse:
    prefer = req.headers.get("prefer")
    answers: dict[int, dict[str, Any]] = {}
    writes = sorted((e for e in entries if e.method in _ORDER), key=lambda e: _ORDER[e.method])
    async with ix.repo.unit(None) as uow:
        refs = await _assign_ids(ix, entries, uow)
        resolved: dict[str, str] = {}
        for entry in entries:
            await _resolve_references(ix, entry, refs, resolved, uow, strict=True)
        touched: dict[tuple[str, str], int] = {}
        async with prepare.ahead(ix.repo, _final(writes)):
            for entry in writes:
                answer = await _must(ix.dispatch(entry.request(req.base, prefer, uow)), entry)
                _check_once(touched, entry, answer)
                answers[entry.index] = response_entry(req.base, entry, answer, prefer)
    for entry in entries:
        if entry.method in ("GET", "HEAD"):
            answers[entry.index] = await _read_entry(ix, req, entry, prefer)
    out = [answers[e.index] for e in entries]
    return FhirResponse(200, make_bundle("transaction-response", out, timestamp=now_instant()))


def _final(writes: list[Entry]) -> list[prepare.Item]:
    """The resources of creates and updates as they will be written (ids given, references
    rewritten), in write order: validated and indexed ahead in worker processes."""
    out: list[prepare.Item] = []
    for e in writes:
        if e.method == "POST" and e.assigned_id is not None:
            out.append((e.type or "", e.assigned_id, e.resource))
        elif e.method == "PUT" and e.id is not None and isinstance(e.resource, dict):
            out.append((e.type or "", e.id, e.resource))
    return out


async def _must(call: Any, entry: Entry) -> Any:
    """Await a step of `entry`; a FhirError becomes the transaction's failure, naming it."""
    try:
        return await call
    except FhirError as err:
        raise entry_failure(entry, err) from None


def _check_once(touched: dict[tuple[str, str], int], entry: Entry,
                answer: FhirResponse) -> None:
    """A transaction may change each resource only once (the spec forbids overlaps)."""
    v = answer.version
    if v is None or answer.status not in (200, 201, 204):
        return
    key = (v.type, v.id)
    if key in touched:
        raise entry_failure(entry, FhirError(
            Category.INVALID, f"{v.type}/{v.id} is also changed by "
            f"Bundle.entry[{touched[key]}]; a transaction may touch a resource only once"))
    touched[key] = entry.index


async def _read_entry(ix: Interactions, req: FhirRequest, entry: Entry,
                      prefer: str | None) -> dict[str, Any]:
    try:
        answer = await ix.dispatch(entry.request(req.base, prefer, None))
    except FhirError as err:
        return error_entry(err)
    return response_entry(req.base, entry, answer, prefer)


async def _assign_ids(ix: Interactions, entries: list[Entry],
                      uow: UnitOfWork) -> references.ReferenceMap:
    """Give every POST an id and map each fullUrl to the `Type/id` it will have."""
    refs = references.ReferenceMap()
    for e in entries:
        if e.type is None or e.method not in ("POST", "PUT"):
            continue
        if e.method == "POST" and e.id is None:
            e.assigned_id = new_id()
            target = e.assigned_id
            if "if-none-exist" in e.headers:
                target = await _single_match(ix, e, e.type, e.headers["if-none-exist"], uow,
                                             default=target)
        elif e.id is not None:
            target = e.id
        elif e.full_url and e.full_url.startswith(_PLACEHOLDER):
            target = await _conditional_put_target(ix, e, uow)
        else:
            continue  # conditional PUT nobody can reference: dispatched as it is
        if e.full_url:
            refs.add(e.full_url, f"{e.type}/{target}")
    return refs


async def _conditional_put_target(ix: Interactions, e: Entry, uow: UnitOfWork) -> str:
    """Resolve `PUT Type?criteria` now, and turn the entry into `PUT Type/id`."""
    body_id = e.resource.get("id") if isinstance(e.resource, dict) else None
    query = urlencode(e.params)  # the params are decoded: re-encode so '&', '+', '%' survive
    target = await _single_match(ix, e, e.type or "", query, uow, default=None)
    if target is not None and body_id not in (None, target):
        raise entry_failure(e, FhirError(
            Category.INVALID, f"The body id {body_id!r} differs from the match {target!r}"))
    target = target or body_id or new_id()
    e.resource = {**e.resource, "id": target}
    e.path, e.params = f"{e.type}/{target}", ()
    return target


async def _single_match(ix: Interactions, e: Entry, type: str, criteria: str,
                        uow: UnitOfWork | None, default: str | None) -> str | None:
    """The id of the one resource `type?criteria` matches; `default` when none; 412 if many."""
    matches = await _find(ix, e, type, criteria, uow)
    if len(matches) > 1:
        raise entry_failure(e, FhirError(
            Category.MULTIPLE_MATCHES, f"{type}?{criteria} matches {len(matches)} resources"))
    return matches[0].id if matches else default


async def _find(ix: Interactions, e: Entry, type: str, criteria: str,
                uow: UnitOfWork | None) -> list[Any]:
    try:
        from fhirpm.repository.conditional import find_matches
    except ImportError:  # search not installed
        raise entry_failure(e, FhirError(
            Category.NOT_SUPPORTED, "Conditional matching needs search, which is not "
            "available")) from None
    try:
        return list(await find_matches(ix, type, criteria, uow, base=e.base,
                                           principal=e.principal))
    except FhirError as err:
        raise entry_failure(e, err) from None


async def _resolve_references(ix: Interactions, e: Entry, refs: references.ReferenceMap,
                              resolved: dict[str, str], uow: UnitOfWork | None, *,
                              strict: bool) -> None:
    """Rewrite references to entries and conditional references in `e.resource`.

    `resolved` caches conditional references across the bundle (Synthea repeats each
    practitioner hundreds of times). `strict` (transactions): a `urn:` reference that
    names no entry is an error, since it could never resolve later.
    """
    if e.resource is None:
        return
    for holder in references.holders(e.resource):
        ref = holder["reference"]
        target = refs.resolve(ref, e.full_url) or resolved.get(ref)
        if target is None and (cond := references.conditional(ref)) is not None:
            found = await _single_match(ix, e, cond[0], cond[1], uow, default=None)
            if found is None:
                raise entry_failure(e, FhirError(
                    Category.NOT_FOUND, f"Conditional reference {ref} matches no resource"))
            target = resolved[ref] = f"{cond[0]}/{found}"
        elif target is None and strict and ref.startswith(_PLACEHOLDER):
            raise entry_failure(e, FhirError(
                Category.INVALID, f"Reference {ref} names no entry's fullUrl in this bundle"))
        if target is not None:
            holder["reference"] = target


