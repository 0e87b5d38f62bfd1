"""AuditEvents as FHIR resources, served from the store's audit log.

The trail is stored as an append-only log of compact records (`fhirpm.audit.trail`), not
as resource versions with search index rows. `AuditView` wraps the repository's store so
that, above it, AuditEvents are ordinary resources: read and vread by id (`ae-<seq>`),
type and instance history, and search with every AuditEvent search parameter, paging,
`_include` and the patient compartment (the access gate adds it like for any type).

Search narrows with what the log indexes, then decides with the search oracle
(`fhirpm.search.match`) over each candidate's index entries, so every parameter and
modifier means exactly what it means for other types:
- a reference the record names (`patient=`, `agent=`, `entity=`; the compartment) picks
  the records naming it, in seq order;
- `date` / `_lastUpdated` bound the `recorded` instant;
- `_id` reads the records directly;
- anything else filters the log in seq order. One page examines at most `SCAN_LIMIT`
  records: a rare match over a long log answers a short (even empty) page with a next
  link, instead of one request scanning everything.
Results come in chain order (oldest first) or newest first (`_sort=-date`). Not offered
(each refused with an OperationOutcome): chains and `_has` from AuditEvent, and
`_revinclude` of or from AuditEvents. Searches over several types (`_type`, a
compartment's `*`) leave AuditEvents out: the trail is searched on its own.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fhirpm.audit import record
from fhirpm.audit.index import AuditIndexer
from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.search import cursor_token
from fhirpm.search.match import MemoryIndex
from fhirpm.search.query import (
    AllOf,
    AnyOf,
    Chain,
    Clause,
    DatePred,
    Has,
    Not,
    Param,
    RefPred,
    SearchQuery,
    SearchResult,
    TokenPred,
)
from fhirpm.search.values import IndexEntry, ReferenceValue
from fhirpm.storage.port import (
    AuditEntry,
    AuditSpan,
    HistoryQuery,
    ResourceStore,
    ResourceVersion,
    UnitOfWork,
)

TYPE = record.TYPE
SCAN_LIMIT = 5000  # records one search page may examine
_BATCH = 200  # records fetched per trip
_REF_PARAMS = frozenset({"patient", "agent", "entity"})
_DATE_PARAMS = frozenset({"date", "_lastUpdated"})
_SORTS = frozenset({"date", "_lastUpdated"})


class AuditView:
    """A ResourceStore that serves `AuditEvent` from the audit log (module doc) and passes
    everything else to the store it wraps."""

    def __init__(self, store: ResourceStore, indexer: Any) -> None:
        self.inner = store
        self._index = AuditIndexer(indexer)
        # seals journaled records into the log before the log is read (Trail.settle)
        self.settle: Callable[[], Awaitable[None]] = _nothing_to_settle

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        return self.inner.unit_of_work()

    # -- reads and history ----------------------------------------------------------------

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        if type != TYPE:
            return await self.inner.read(type, id)
        seq = record.seq_of(id)
        await self.settle()
        entry = await self.inner.audit_get(seq) if seq is not None else None
        return _version(entry) if entry is not None else None

    async def vread(self, type: str, id: str, version: int) -> ResourceVersion | None:
        if type != TYPE:
            return await self.inner.vread(type, id, version)
        return await self.read(type, id) if version == 1 else None

    async def history(self, query: HistoryQuery) -> list[ResourceVersion]:
        if query.type != TYPE:
            return await self.inner.history(query)
        if query.id is not None:
            found = await self.read(TYPE, query.id)
            return [found] if found is not None and _in_history(found, query) else []
        await self.settle()
        entries = await self.inner.audit_list(AuditSpan(
            since=query.since, until=query.at, before=query.before_seq, descending=True,
            limit=query.count))
        return [_version(e) for e in entries]

    async def history_count(self, query: HistoryQuery) -> int:
        if query.type != TYPE:
            return await self.inner.history_count(query)
        if query.id is not None:
            return len(await self.history(query))
        await self.settle()
        return await self.inner.audit_count(AuditSpan(since=query.since, until=query.at))

    # -- search ---------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchResult:
        if query.types == (TYPE,):
            return await self._search(query)
        if any(i.source == TYPE for i in query.revinclude):
            raise _refused("_revinclude")
        if any(_has_audit(c) for c in query.where):
            raise _refused("_has")
        if TYPE in query.types:  # several types (a compartment's `*`): the others only
            query = replace(query, types=tuple(t for t in query.types if t != TYPE))
        return await self.inner.search(query)

    async def _search(self, query: SearchQuery) -> SearchResult:
        _check(query)
        await self.settle()
        descending = bool(query.sort) and query.sort[0].descending
        position = _position(query.cursor, descending)
        matches: list[ResourceVersion] = []
        index: list[list[IndexEntry]] = []  # each match's index entries (for _include)
        last_seen: int | None = None
        examined = 0
        more = False
        async for entry in self._candidates(query.where, descending, position):
            examined += 1
            last_seen = entry.seq
            body = record.render(entry)  # rendered once: decided on, then served
            entries = self._index.extract(body)
            if _holds(query, body["id"], entries):
                if len(matches) == query.count:
                    more = True
                    break
                matches.append(_version(entry, body))
                index.append(entries)
            if examined >= SCAN_LIMIT:
                more = True  # the next page goes on from here
                break
        if query.total == "accurate":
            total: int | None = await self._total(query)
        else:  # known anyway when the first page holds every match (as the stores do)
            total = len(matches) if position is None and not more else None
        next_cursor = None
        if more:
            resume = matches[-1].seq if len(matches) == query.count else last_seen
            next_cursor = cursor_token.pack(["audit", resume, descending])
        included = await self._included(query, index)
        return SearchResult(matches, included, total, next_cursor, has_more=more)

    async def _total(self, query: SearchQuery) -> int:
        count = 0
        async for entry in self._candidates(query.where, False, None):
            if not query.where:
                count += 1
                continue
            body = record.render(entry)
            count += _holds(query, body["id"], self._index.extract(body))
        return count

    async def _candidates(self, where: Sequence[Clause], descending: bool,
                          position: int | None) -> AsyncIterator[AuditEntry]:
        """Records that may match, in seq order, after `position`."""
        ids = _ids(where)
        if ids is not None:
            seqs = sorted({s for s in (record.seq_of(i) for i in ids) if s is not None},
                          reverse=descending)
            for seq in seqs:
                if position is None or (seq < position if descending else seq > position):
                    entry = await self.inner.audit_get(seq)
                    if entry is not None:
                        yield entry
            return
        since, until = _recorded_bounds(where)
        refs = _refs(where)
        async for entry in self._merged(refs or [None], since, until, descending, position):
            yield entry

    async def _merged(self, refs: Sequence[str | None], since: str | None,
                      until: str | None, descending: bool,
                      position: int | None) -> AsyncIterator[AuditEntry]:
        """The records naming any of `refs` (None: all records), merged in seq order."""
        while True:
            batches = []
            for ref in refs:
                span = AuditSpan(ref=ref, since=since, until=until, descending=descending,
                                 limit=_BATCH, **_beyond(position, descending))
                batches.append(await self.inner.audit_list(span))
            full = [b[-1].seq for b in batches if len(b) == _BATCH]
            # every list holds all its records up to the nearest of the full lists' ends
            bound = (max(full) if descending else min(full)) if full else None
            merged = heapq.merge(*batches, key=lambda e: -e.seq if descending else e.seq)
            seen: set[int] = set()
            for entry in merged:
                if bound is not None and (entry.seq < bound if descending else
                                          entry.seq > bound):
                    break
                if entry.seq not in seen:
                    seen.add(entry.seq)
                    position = entry.seq
                    yield entry
            if bound is None:
                return

    async def _included(self, query: SearchQuery,
                        index: list[list[IndexEntry]]) -> list[ResourceVersion]:
        """What `_include` adds, from the matches' index entries."""
        wanted: dict[tuple[str, str], None] = {}
        for include in query.include:
            if include.source != TYPE:
                continue
            for entries in index:
                for entry in entries:
                    value = entry.value
                    if (entry.param in include.codes and isinstance(value, ReferenceValue)
                            and value.url is None and value.type and value.id
                            and (include.target is None or value.type == include.target)):
                        wanted[(value.type, value.id)] = None
        out = []
        for type_, id_ in list(wanted)[: query.max_include]:
            found = await self.read(type_, id_)
            if found is not None and not found.deleted:
                out.append(found)
        return out


async def _nothing_to_settle() -> None:
    return None


def _version(entry: AuditEntry, body: dict[str, Any] | None = None) -> ResourceVersion:
    """The entry as a stored version (`body`: its AuditEvent, when already rendered)."""
    served = jsonio.dumps(body) if body is not None else record.render_bytes(entry)
    return ResourceVersion(TYPE, record.event_id(entry.seq), 1, entry.recorded, "POST",
                           served, entry.seq)


def _holds(query: SearchQuery, id: str, entries: list[IndexEntry]) -> bool:
    """Whether the AuditEvent with these index entries matches `query` (the oracle)."""
    if not query.where:
        return True
    memory = MemoryIndex()
    memory.put(TYPE, id, entries)
    found, _ = memory.search(SearchQuery(types=(TYPE,), where=query.where))
    return bool(found)


def _in_history(version: ResourceVersion, query: HistoryQuery) -> bool:
    return ((query.since is None or version.last_updated >= query.since)
            and (query.at is None or version.last_updated <= query.at)
            and (query.before_seq is None or version.seq < query.before_seq))


def _beyond(position: int | None, descending: bool) -> dict[str, int]:
    if position is None:
        return {}
    return {"before": position} if descending else {"after": position}


# -- what a query may ask of AuditEvents ----------------------------------------------------


def _refused(what: str) -> FhirError:
    return FhirError(Category.NOT_SUPPORTED, f"{what} is not supported for AuditEvent: the "
                     "audit trail is searched on its own (AuditEvent?patient=..., agent=, "
                     "entity=, date=, action=, ...)")


def _check(query: SearchQuery) -> None:
    if query.revinclude:
        raise _refused("_revinclude")
    if any(i.iterate for i in query.include):
        raise _refused("_include:iterate")
    for key in query.sort:
        if key.param not in _SORTS:
            raise FhirError(Category.NOT_SUPPORTED, "AuditEvents sort by date only "
                            "(_sort=date or _sort=-date)", expression=("_sort",))
    for clause in query.where:
        _check_clause(clause)


def _check_clause(clause: Clause) -> None:
    if isinstance(clause, Chain):
        raise _refused("A chained parameter")
    if isinstance(clause, Has):
        raise _refused("_has")
    if isinstance(clause, Not):
        _check_clause(clause.clause)
    if isinstance(clause, AnyOf | AllOf):
        for inner in clause.clauses:
            _check_clause(inner)


def _has_audit(clause: Clause) -> bool:
    """Whether a clause of another type's search asks about AuditEvents (`_has`)."""
    if isinstance(clause, Has):
        return clause.type == TYPE or _has_audit(clause.clause)
    if isinstance(clause, Not):
        return _has_audit(clause.clause)
    if isinstance(clause, AnyOf | AllOf):
        return any(_has_audit(c) for c in clause.clauses)
    if isinstance(clause, Chain):
        return any(_has_audit(c) for _, c in clause.targets)
    return False


def _position(cursor: str | None, descending: bool) -> int | None:
    if cursor is None:
        return None
    tag, seq, direction = cursor_token.unpack(cursor, 3)
    if tag != "audit" or not isinstance(seq, int) or direction is not descending:
        raise cursor_token.refused()
    return seq


# -- narrowing: what the log's indexes can answer ---------------------------------------------


def _ids(where: Sequence[Clause]) -> list[str] | None:
    for clause in where:
        if isinstance(clause, Param) and clause.code == "_id" and all(
                isinstance(p, TokenPred) and p.code for p in clause.preds):
            return [p.code for p in clause.preds]  # type: ignore[union-attr]
    return None


def _refs(where: Sequence[Clause]) -> list[str] | None:
    """References one of which every match names (a top-level clause), if there are."""
    for clause in where:
        found = _clause_refs(clause)
        if found:
            return found
    return None


def _clause_refs(clause: Clause) -> list[str] | None:
    if isinstance(clause, AnyOf):
        parts = [_clause_refs(c) for c in clause.clauses]
        if not parts or any(p is None for p in parts):
            return None
        return list(dict.fromkeys(r for p in parts for r in p or ()))
    if not (isinstance(clause, Param) and clause.code in _REF_PARAMS):
        return None
    refs = []
    for pred in clause.preds:
        if not isinstance(pred, RefPred) or pred.id is None or pred.url is not None:
            return None
        type_ = pred.type or ("Patient" if clause.code == "patient" else None)
        if type_ is None:
            return None
        refs.append(f"{type_}/{pred.id}")
    return refs or None


def _recorded_bounds(where: Sequence[Clause]) -> tuple[str | None, str | None]:
    """[since, until] instants the `recorded` of every match lies within (widened by a
    second: the oracle decides exactly)."""
    lo: int | None = None
    hi: int | None = None
    for clause in where:
        if not (isinstance(clause, Param) and clause.code in _DATE_PARAMS):
            continue
        bounds = [_pred_bounds(p) for p in clause.preds]
        if any(b is None for b in bounds):
            continue
        los = [b[0] for b in bounds if b is not None]
        his = [b[1] for b in bounds if b is not None]
        if all(x is not None for x in los):
            low = min(x for x in los if x is not None)
            lo = low if lo is None else max(lo, low)
        if all(x is not None for x in his):
            high = max(x for x in his if x is not None)
            hi = high if hi is None else min(hi, high)
    return (_instant(lo - 1_000_000) if lo is not None else None,
            _instant(hi + 1_000_000) if hi is not None else None)


def _pred_bounds(pred: Any) -> tuple[int | None, int | None] | None:
    if not isinstance(pred, DatePred):
        return None
    match pred.prefix:
        case "eq" | "ap":
            return pred.lo, pred.hi
        case "gt" | "sa" | "ge":
            return pred.lo, None
        case "lt" | "eb" | "le":
            return None, pred.hi
    return None, None  # ne


def _instant(micros: int) -> str:
    moment = datetime.fromtimestamp(max(micros, 0) / 1_000_000, UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"
