"""The storage port: what the repository needs from a store, in plain primitives.

At this layer there is no HTTP, no validation and no FHIR semantics beyond versions: the
repository decides ids, versions, timestamps and index entries; a store keeps them
atomically. Every committed version is also an entry in the store's change log (its `seq`),
which consumers (audit, subscriptions, HL7 v2 outbound, reminders) follow with durable
cursors. Adapters translate driver exceptions into `StoreError`s at their edge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from fhirpm.search.values import IndexEntry

if TYPE_CHECKING:
    from fhirpm.search.query import SearchQuery, SearchResult


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One version of one resource, exactly as stored and served."""

    type: str
    id: str
    version: int
    last_updated: str  # FHIR instant, UTC, fixed width: comparable as text
    method: str  # the interaction that made it: POST | PUT | PATCH | DELETE
    body: bytes  # the served JSON (with id and meta); b"" for a deletion tombstone
    seq: int = 0  # position in the change log; assigned by the store on commit

    @property
    def deleted(self) -> bool:
        return self.method == "DELETE"


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    type: str | None = None  # None: system level
    id: str | None = None  # None: type (or system) level
    since: str | None = None  # versions with last_updated >= since
    at: str | None = None  # the versions current at this instant
    count: int = 20
    before_seq: int | None = None  # keyset cursor: only versions older than this seq


@dataclass(frozen=True, slots=True)
class Document:
    """A small non-FHIR record (auth clients and tokens, job leases, consumer state).

    `rev` increments on every write and makes compare-and-swap possible; `expires_at`
    (epoch seconds) lets a store drop it after that time (it is never returned once expired).
    """

    collection: str
    key: str
    rev: int
    body: bytes
    expires_at: int | None = None


class AuditDraft(NamedTuple):
    """An audit record before it has a place in the store's audit log.

    `payload` is what the hash chain seals (opaque to the store); `refs` are the references
    it names ("Patient/7", "Practitioner/2"), each once, kept beside it so the records
    naming one can be found without reading payloads. Immutable tuples, not frozen
    dataclasses: every read makes one, and a frozen dataclass costs ~1 us more to build."""

    recorded: str  # FHIR instant, fixed width
    refs: tuple[str, ...]
    payload: bytes


class AuditEntry(NamedTuple):
    """A record in the store's audit log: position, link to the previous record, seal."""

    seq: int  # 1, 2, 3, ... per store, assigned inside the transaction that appends it
    recorded: str
    refs: tuple[str, ...]
    payload: bytes
    previous: str  # the previous entry's hash (the chain's anchor for the first one)
    hash: str


# the "previous hash" of a log's very first entry (the chain's genesis)
AUDIT_GENESIS = "0" * 64

# seals one payload at its position: (payload, seq, previous hash) -> hash
Sealer = Callable[[bytes, int, str], str]


@dataclass(frozen=True, slots=True)
class AuditSpan:
    """Which audit log entries to list: all filters are optional and combine with AND."""

    ref: str | None = None  # only entries naming this reference
    since: str | None = None  # recorded >= since
    until: str | None = None  # recorded <= until
    after: int | None = None  # seq > after
    before: int | None = None  # seq < before
    descending: bool = False  # newest first
    limit: int = 100


class StoreError(Exception):
    """A store failure the repository can explain to the client."""


class VersionConflict(StoreError):
    """The current version changed under a write (another writer won the race)."""


class UniqueKeyTaken(StoreError):
    """A unique match key (conditional create) is already held by another resource."""

    def __init__(self, key: str, holder: tuple[str, str] | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.holder = holder


class UnitOfWork(Protocol):
    """All writes made through one unit of work commit together or not at all."""

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        """The current version (tombstones included), seeing this unit's own writes."""

    async def put(
        self,
        version: ResourceVersion,
        index: Sequence[IndexEntry],
        *,
        expected_version: int,
        unique_keys: Sequence[str] = (),
    ) -> None:
        """Store a new current version and its index entries.

        `expected_version` is the version the writer based its change on (0: none exists);
        a mismatch raises VersionConflict. `unique_keys` are claimed for this resource;
        one held by another live resource raises UniqueKeyTaken.
        """

    async def search(self, query: SearchQuery) -> SearchResult:
        """Search inside the unit, seeing its own writes (conditional interactions)."""

    async def reindex(self, type: str, id: str, version: int,
                      index: Sequence[IndexEntry]) -> bool:
        """Replace the index entries of type/id without a new version, if its current
        version is still `version` (reindex jobs); False when it moved on or is deleted."""

    async def doc_put(self, collection: str, key: str, body: bytes, *,
                      expected_rev: int | None = None, expires_at: int | None = None) -> None:
        """Write a document with the unit (`ResourceStore.doc_put`'s meaning): it commits
        with the unit's data or not at all; a rev mismatch fails the unit
        (VersionConflict), at the latest when it commits."""

    async def audit_append(self, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
        """Append `drafts` to the audit log when the unit commits, in order, after the
        log's head as it is inside the commit's transaction: each gets the next seq and
        `seal(payload, seq, previous hash)` as its hash. Two units appending at once
        cannot both take a position: the loser fails with VersionConflict."""


class ResourceStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]: ...

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        """The current version, or the tombstone if deleted, or None if never existed."""

    async def vread(self, type: str, id: str, version: int) -> ResourceVersion | None: ...

    async def history(self, query: HistoryQuery) -> list[ResourceVersion]:
        """Versions newest first (by seq), at most `query.count`."""

    async def history_count(self, query: HistoryQuery) -> int: ...

    async def changes(self, after_seq: int, limit: int) -> list[ResourceVersion]:
        """The change log in commit order: versions with seq > after_seq (bodies included)."""

    async def get_cursor(self, consumer: str) -> int: ...

    async def set_cursor(self, consumer: str, seq: int) -> None: ...

    async def search(self, query: SearchQuery) -> SearchResult: ...

    async def expunge(self, type: str, ids: Sequence[str]) -> int:
        """Remove these resources for good: every version (history and change log rows),
        index entries and unique keys. Only for data past a retention period (operators'
        tools); the FHIR API only ever deletes as versioned tombstones. Returns how many
        of the resources existed. Idempotent."""

    # -- the audit log: append-only, hash-chained, outside the resource tables ---------

    async def audit_commit(self, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
        """Append `drafts` in a transaction of their own, now (as `audit_append` in a unit
        of work that writes nothing else; the group commit of reads' records)."""

    async def audit_head(self) -> AuditEntry | None:
        """The newest entry (None: the log is empty)."""

    async def audit_get(self, seq: int) -> AuditEntry | None: ...

    async def audit_list(self, span: AuditSpan) -> list[AuditEntry]:
        """Entries within `span`, by seq (ascending unless `span.descending`)."""

    async def audit_count(self, span: AuditSpan) -> int:
        """How many entries `span` holds, ignoring its limit."""

    async def audit_purge(self, upto: int) -> int:
        """Remove the entries with seq <= upto (retention); returns how many went."""

    async def audit_restore(self, entries: Sequence[AuditEntry]) -> None:
        """Insert entries exactly as given (seq and seals kept): `store copy` only."""

    # -- small documents: compare-and-swap records beside the FHIR data -----------------

    async def doc_get(self, collection: str, key: str) -> Document | None: ...

    async def doc_put(self, collection: str, key: str, body: bytes, *,
                      expected_rev: int | None = None, expires_at: int | None = None) -> int:
        """Write a document and return its new rev. `expected_rev`: None writes
        unconditionally, 0 requires that none exists, n requires rev n; a mismatch raises
        VersionConflict (this is how job leases and single-use codes are taken)."""

    async def doc_delete(self, collection: str, key: str,
                         expected_rev: int | None = None) -> bool: ...

    async def doc_list(self, collection: str, prefix: str = "",
                       limit: int = 1000) -> list[Document]: ...
