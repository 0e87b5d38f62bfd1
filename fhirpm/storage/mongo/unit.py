"""Units of work on MongoDB: one multi-document transaction, replayed when it loses a race.

A unit runs its reads and writes eagerly inside a transaction (so its own searches see its
own writes) and records them in a log. Whenever the server reports a transient failure
(see `txn`), the unit aborts, starts a fresh transaction and replays the log: each recorded
`current` read and search must return what it returned before and each put must still find
its expected version, otherwise the unit fails with VersionConflict. A replayed unit is
therefore equivalent to one that ran alone: optimistic concurrency with validation.

The change log (`history._id`, the seq) is written only at commit: the unit increments the
single `counters` document by its number of versions inside the same transaction, then
appends its versions with those seqs. Every committing unit writes that one document, and
a transaction may only write a document that no transaction has changed since its snapshot
(MongoDB refuses the write with WriteConflict; other servers refuse the commit), so a unit
can only take seqs after every unit that took smaller ones has committed: seq order is
commit order, and a consumer that has read up to seq n will never later find a commit below
n. This costs one counter write per unit (not per version) and serialises commits, not the
units' work; the store also runs one unit at a time per process (as the SQLite adapter does),
so replays only happen between processes. Without transactions (a deployment that cannot
run them, accepted by FHIRPM_MONGO_ALLOW_NO_TRANSACTIONS) a `BufferedUnit` keeps the writes
in memory and applies them at the end: a failing unit writes nothing, but a crash while
applying can leave part of it, and concurrent writers can interleave their seqs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import InvalidOperation, OperationFailure, PyMongoError

from fhirpm.search.values import IndexEntry
from fhirpm.storage.mongo import audit, documents, schema, txn, writes
from fhirpm.storage.mongo.writes import Put
from fhirpm.storage.port import (
    AuditDraft,
    ResourceVersion,
    Sealer,
    StoreError,
    VersionConflict,
)

if TYPE_CHECKING:
    from fhirpm.search.query import SearchQuery, SearchResult

T = TypeVar("T")
SearchFn = Callable[["SearchQuery", AsyncClientSession | None], Awaitable["SearchResult"]]
EnsureType = Callable[[str], Awaitable[None]]


def _version_key(v: ResourceVersion | None) -> tuple[int, str] | None:
    return (v.version, v.method) if v else None


def _result_key(result: SearchResult) -> tuple[Any, ...]:
    def keys(versions: Sequence[ResourceVersion]) -> tuple[tuple[str, str, int], ...]:
        return tuple((v.type, v.id, v.version) for v in versions)
    return keys(result.matches), keys(result.included), result.total, result.has_more


class TransactionalUnit:
    def __init__(self, db: AsyncDatabase, search: SearchFn, ensure_type: EnsureType,
                 options: dict[str, Any]) -> None:
        self._db = db
        self._search = search
        self._ensure_type = ensure_type
        self._options = options
        self._session: AsyncClientSession | None = None
        self._log: list[tuple[Any, ...]] = []
        self._audit: list[tuple[Sequence[AuditDraft], Sealer]] = []  # appended at commit
        self._broken = False  # the server transaction must be replaced before further use

    async def begin(self) -> None:
        await self._new_transaction()

    async def close(self) -> None:
        """End the session; call once, after commit or rollback."""
        if self._session is not None:
            await self._session.end_session()
            self._session = None

    # -- the UnitOfWork port ------------------------------------------------------------

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        found = await self._run(lambda s: writes.read_current(self._db, s, type, id))
        self._log.append(("current", type, id, _version_key(found)))
        return found

    async def put(self, version: ResourceVersion, index: Sequence[IndexEntry], *,
                  expected_version: int, unique_keys: Sequence[str] = ()) -> None:
        put = Put.checked(version, index, expected_version, unique_keys)
        await self._ensure_type(version.type)
        try:
            await self._run(lambda s: writes.apply_put(self._db, s, put))
        except BaseException:
            self._broken = True  # the put may be half applied: replay the log without it
            raise
        self._log.append(("put", put))

    async def search(self, query: SearchQuery) -> SearchResult:
        result = await self._run(lambda s: self._search(query, s))
        self._log.append(("search", query, _result_key(result)))
        return result

    async def reindex(self, type: str, id: str, version: int,
                      index: Sequence[IndexEntry]) -> bool:
        if not schema.is_type_name(type) or not isinstance(id, str):
            return False  # no such collection can exist
        ix = schema.index_document(index)
        done = await self._run(
            lambda s: writes.apply_reindex(self._db, s, type, id, version, ix))
        self._log.append(("reindex", type, id, version, ix, done))
        return done

    async def doc_put(self, collection: str, key: str, body: bytes, *,
                      expected_rev: int | None = None, expires_at: int | None = None) -> None:
        op = ("doc", collection, key, body, expected_rev, expires_at)
        await self._run(lambda s: _doc_put(self._db, s, op))
        self._log.append(op)

    async def audit_append(self, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
        if drafts:  # sealed at commit, after the head as the commit's transaction sees it
            self._audit.append((drafts, seal))

    # -- commit and rollback (called by the store) ------------------------------------------

    async def commit(self) -> list[int]:
        puts = [op[1] for op in self._log if op[0] == "put"]

        async def finish_and_commit(session: AsyncClientSession) -> list[int]:
            seqs = await writes.finish(self._db, session, puts)
            for drafts, seal in self._audit:
                await audit.append(self._db, session, drafts, seal)
            await _commit(session)
            return seqs
        return await self._run(finish_and_commit)

    async def rollback(self) -> None:
        if self._session is not None:
            await _abort(self._session)

    # -- replay ---------------------------------------------------------------------------

    async def _run(self, step: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Run one step in the transaction, replaying the unit after transient failures."""
        for attempt in range(txn.MAX_ATTEMPTS):
            if attempt:
                await txn.backoff(attempt)
            try:
                if self._broken:
                    await self._replay()
                assert self._session is not None, "the unit of work has ended"
                return await step(self._session)
            except (PyMongoError, txn.CommitRefused) as exc:
                if not txn.is_transient(exc):
                    raise txn.unavailable(exc, "unit of work") from exc  # type: ignore[arg-type]
                self._broken = True
        raise txn.gave_up("unit of work")

    async def _new_transaction(self) -> None:
        # A fresh session for every attempt: a session whose commit was refused cannot be
        # aborted (the driver considers it committed), and must not lend its state to the
        # next attempt.
        if self._session is not None:
            await _abort(self._session)
            _discard(self._session)
            await self.close()
        self._session = self._db.client.start_session()
        await self._session.start_transaction(**self._options)

    async def _replay(self) -> None:
        await self._new_transaction()
        assert self._session is not None
        for op in self._log:
            if op[0] == "current":
                _, type, id, seen = op
                now = await writes.read_current(self._db, self._session, type, id)
                if _version_key(now) != seen:
                    raise VersionConflict(f"{type}/{id} changed under this unit of work")
            elif op[0] == "put":
                await writes.apply_put(self._db, self._session, op[1])
            elif op[0] == "doc":
                await _doc_put(self._db, self._session, op)
            elif op[0] == "reindex":
                _, type, id, version, ix, done = op
                if await writes.apply_reindex(self._db, self._session, type, id, version,
                                              ix) != done:
                    raise VersionConflict(f"{type}/{id} changed under this unit of work")
            else:
                _, query, seen = op
                if _result_key(await self._search(query, self._session)) != seen:
                    raise VersionConflict("search results changed under this unit of work")
        self._broken = False


async def _doc_put(db: AsyncDatabase, session: AsyncClientSession | None,
                   op: tuple[Any, ...]) -> None:
    _, collection, key, body, expected_rev, expires_at = op
    await documents.put(db, collection, key, body, expected_rev=expected_rev,
                        expires_at=expires_at, session=session)


async def _commit(session: AsyncClientSession) -> None:
    try:
        await _commit_until_known(session)
    except BaseException:
        _discard(session)
        raise


async def _commit_until_known(session: AsyncClientSession) -> None:
    for attempt in range(txn.MAX_ATTEMPTS):
        if attempt:
            await txn.backoff(attempt)
        try:
            await session.commit_transaction()
            return
        except OperationFailure as exc:
            if exc.has_error_label(txn.UNKNOWN_COMMIT_LABEL):
                continue  # the commit may have happened: ask again, never replay
            if exc.has_error_label(txn.TRANSIENT_LABEL):
                raise
            raise txn.CommitRefused(exc) from exc
        except PyMongoError as exc:
            if exc.has_error_label(txn.UNKNOWN_COMMIT_LABEL):
                continue
            raise
    raise StoreError("MongoDB did not confirm the commit; its outcome is unknown")


def _discard(session: AsyncClientSession) -> None:
    """Keep a session whose transaction failed out of the driver's pool.

    After a refused or uncertain commit the server's idea of that session is unknown (one
    server keeps the failed transaction open under the session id and ignores the next
    `startTransaction`): the driver then hands the same session id to a later unit. A dirty
    server session is dropped instead, as the driver does itself after network errors.
    """
    server_session = getattr(session, "_server_session", None)
    mark_dirty = getattr(server_session, "mark_dirty", None)
    if mark_dirty is not None:
        mark_dirty()


async def _abort(session: AsyncClientSession) -> None:
    if not session.in_transaction:
        return
    # if the abort fails the server drops the unfinished transaction on its own
    with contextlib.suppress(PyMongoError, InvalidOperation):
        await session.abort_transaction()


class BufferedUnit:
    """A unit of work for deployments without transactions: writes wait for the end."""

    def __init__(self, db: AsyncDatabase, search: SearchFn, ensure_type: EnsureType) -> None:
        self._db = db
        self._search = search
        self._ensure_type = ensure_type
        self._puts: list[Put] = []
        self._pending: dict[tuple[str, str], ResourceVersion] = {}
        self._reindexes: list[tuple[str, str, int, dict[str, Any]]] = []
        self._audit: list[tuple[Sequence[AuditDraft], Sealer]] = []
        self._docs: list[tuple[Any, ...]] = []

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        pending = self._pending.get((type, id))
        if pending is not None:
            return pending
        return await writes.read_current(self._db, None, type, id)

    async def put(self, version: ResourceVersion, index: Sequence[IndexEntry], *,
                  expected_version: int, unique_keys: Sequence[str] = ()) -> None:
        put = Put.checked(version, index, expected_version, unique_keys)
        current = await self.current(version.type, version.id)
        have = current.version if current else 0
        if have != expected_version:
            raise VersionConflict(f"{version.type}/{version.id} is at version {have}, "
                                  f"not {expected_version}")
        self._puts.append(put)
        self._pending[(version.type, version.id)] = version

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._search(query, None)  # this unit's own writes are not visible yet

    async def reindex(self, type: str, id: str, version: int,
                      index: Sequence[IndexEntry]) -> bool:
        if not schema.is_type_name(type) or not isinstance(id, str):
            return False
        current = await self.current(type, id)
        if current is None or current.deleted or current.version != version:
            return False
        # applied at commit under the same condition (a later version keeps its own values)
        self._reindexes.append((type, id, version, schema.index_document(index)))
        return True

    async def doc_put(self, collection: str, key: str, body: bytes, *,
                      expected_rev: int | None = None, expires_at: int | None = None) -> None:
        self._docs.append(("doc", collection, key, body, expected_rev, expires_at))

    async def audit_append(self, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
        if drafts:
            self._audit.append((drafts, seal))

    async def commit(self) -> list[int]:
        for type in {p.version.type for p in self._puts}:
            await self._ensure_type(type)
        for put in self._puts:
            await writes.apply_put(self._db, None, put)
        for type, id, version, ix in self._reindexes:
            await writes.apply_reindex(self._db, None, type, id, version, ix)
        seqs = await writes.finish(self._db, None, self._puts)
        for op in self._docs:
            await _doc_put(self._db, None, op)
        for drafts, seal in self._audit:  # not atomic without transactions (docs/deploy.md)
            await audit.append(self._db, None, drafts, seal)
        return seqs

    async def rollback(self) -> None:
        self._puts.clear()
        self._reindexes.clear()
        self._audit.clear()
        self._docs.clear()
