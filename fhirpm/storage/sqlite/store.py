"""The SQLite adapter of the ResourceStore port: the embedded default.

WAL mode; all writes go through one writer thread (SQLite has one writer anyway), serialised
by an asyncio lock per unit of work; reads run in a small pool of reader threads, each with
its own connection, so the event loop never blocks on the database. Several server processes
may share one file: BEGIN IMMEDIATE and busy_timeout serialise their writers.

Durability: WAL with synchronous=NORMAL survives a killed process (kill -9) with every
committed transaction whole; set `synchronous="FULL"` to also survive power loss.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fhirpm.search.query import SearchQuery, SearchResult
from fhirpm.search.values import IndexEntry
from fhirpm.storage.port import (
    AuditDraft,
    AuditEntry,
    AuditSpan,
    Document,
    HistoryQuery,
    ResourceVersion,
    Sealer,
    UniqueKeyTaken,
    VersionConflict,
)
from fhirpm.storage.sqlite import audit, identities, index, schema
from fhirpm.storage.sqlite import search as sql_search
from fhirpm.storage.sqlite.checkpoint import WAL_BOUND_PAGES, Checkpointer
from fhirpm.storage.sqlite.reads import CurrentReads

T = TypeVar("T")

_VERSION_COLUMNS = "h.type, h.id, h.version, h.last_updated, h.method, h.body, h.seq"


def version_from_row(row: tuple) -> ResourceVersion:
    return ResourceVersion(
        type=row[0], id=row[1], version=row[2], last_updated=row[3], method=row[4],
        body=bytes(row[5]), seq=row[6],
    )


def parse_sqlite_url(url: str) -> str:
    """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db` -> a filesystem path."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    path = url[len("sqlite:///"):]
    if not path:
        raise ValueError("sqlite URL names no file")
    return path


class SqliteResourceStore:
    def __init__(self, path: str, *, readers: int = 4, synchronous: str = "NORMAL",
                 wal_bound_pages: int = WAL_BOUND_PAGES) -> None:
        self.path = path
        self._wal_bound_pages = wal_bound_pages
        self._checkpointer: Checkpointer | None = None  # see checkpoint.py
        self._synchronous = synchronous
        self._readers_count = readers
        self._local = threading.local()
        self._all_connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._write_lock = asyncio.Lock()
        self._commit_listeners: list[Callable[[], None]] = []
        self._audit_unindexed = 0  # records this process appended since it last indexed
        self._audit_indexing: asyncio.Future[Any] | None = None  # upkeep running
        self._loop_writable: sqlite3.Connection | None = None  # see _on_loop_connection

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every committed unit of work (change-feed wake-ups).

        Listeners run on the event loop right after COMMIT and must not raise or block."""
        self._commit_listeners.append(listener)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SqliteResourceStore:
        return cls(parse_sqlite_url(url), **kwargs)

    # -- lifecycle -------------------------------------------------------------------

    def _connect(self, *, query_only: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        if query_only:
            conn.execute("PRAGMA query_only=ON")
        else:  # the writer: commits checkpoint only past the bound (checkpoint.py)
            conn.execute(f"PRAGMA wal_autocheckpoint={self._wal_bound_pages}")
        with self._connections_lock:
            self._all_connections.append(conn)
        return conn

    def _thread_connection(self, query_only: bool) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(query_only=query_only)
        return conn

    async def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="fhirpm-sqlite-writer")
        self._readers = ThreadPoolExecutor(self._readers_count,
                                           thread_name_prefix="fhirpm-sqlite-reader")
        await self._write(schema.migrate)
        # the log's records no process has indexed yet (say, appended before a restart)
        # count towards this process's next indexing, so restarts cannot let them pile up
        self._audit_unindexed = await self._write(audit.unindexed)
        self._checkpointer = Checkpointer(self.path)
        self._checkpointer.start()

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        for pool in (self._writer, self._readers):
            if pool is not None:
                pool.shutdown(wait=True)
        with self._connections_lock:
            for conn in self._all_connections:
                conn.close()
            self._all_connections.clear()
        self._local = threading.local()  # the event loop thread's connection was closed too
        self._writer = self._readers = None
        self._loop_writable = None

    # -- thread hops -----------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn)

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `fn` on the writer thread now, not when the caller next yields to the
        loop (as a coroutine or task would: a transaction that never suspends until its
        COMMIT would leave every background batch unstarted until then)."""
        assert self._writer is not None, "store is not open"
        return asyncio.get_running_loop().run_in_executor(
            self._writer, lambda: fn(self._thread_connection(query_only=False)))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._readers is not None, "store is not open"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._readers, lambda: fn(self._thread_connection(query_only=True)))

    # -- writes ----------------------------------------------------------------------

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[SqliteUnitOfWork]:
        async with self._write_lock:
            unit = SqliteUnitOfWork(self)  # BEGIN IMMEDIATE rides on its first hop
            try:
                yield unit
                await asyncio.shield(unit.hop(_commit))  # buffered puts + COMMIT: one hop
            except BaseException:
                # Submitted to the single writer thread, so it runs after any statement
                # still in flight even if this task is being cancelled.
                await asyncio.shield(self._write(_rollback))
                raise
            if self._checkpointer is not None:
                self._checkpointer.poke()
            for listener in self._commit_listeners:
                listener()
            if unit._audit:
                self._audit_appended(sum(len(drafts) for drafts, _ in unit._audit))

    # -- reads -----------------------------------------------------------------------

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        # A point read runs on the event loop's own query-only connection, not the reader
        # pool: a primary-key lookup in WAL mode never waits for a lock and costs a few
        # microseconds, while the hop to a reader thread and back (futures, GIL hand-off,
        # wake-ups) cost ~4x the whole read's CPU (docs/performance.md). Searches and
        # history, whose cost grows with the data, stay on the reader pool. What it read
        # is remembered until anything commits (fhirpm.storage.sqlite.reads).
        reads = getattr(self._local, "reads", None)
        if reads is None:
            reads = self._local.reads = CurrentReads(self._thread_connection(query_only=True),
                                                     _current)
        return reads.read(type, id)

    async def vread(self, type: str, id: str, version: int) -> ResourceVersion | None:
        def run(c: sqlite3.Connection) -> ResourceVersion | None:
            row = c.execute(
                f"SELECT {_VERSION_COLUMNS} FROM history h "
                "WHERE h.type = ? AND h.id = ? AND h.version = ?", (type, id, version),
            ).fetchone()
            return version_from_row(row) if row else None
        return await self._read(run)

    async def history(self, query: HistoryQuery) -> list[ResourceVersion]:
        sql, args = _history_sql(query, f"SELECT {_VERSION_COLUMNS}")
        sql += " ORDER BY h.seq DESC LIMIT ?"
        args.append(query.count)
        return await self._read(lambda c: [version_from_row(r) for r in c.execute(sql, args)])

    async def history_count(self, query: HistoryQuery) -> int:
        sql, args = _history_sql(HistoryQuery(query.type, query.id, query.since, query.at),
                                 "SELECT count(*)")
        return await self._read(lambda c: c.execute(sql, args).fetchone()[0])

    async def changes(self, after_seq: int, limit: int) -> list[ResourceVersion]:
        def run(c: sqlite3.Connection) -> list[ResourceVersion]:
            rows = c.execute(
                f"SELECT {_VERSION_COLUMNS} FROM history h WHERE h.seq > ? "
                "ORDER BY h.seq LIMIT ?", (after_seq, limit))
            return [version_from_row(r) for r in rows]
        return await self._read(run)

    async def get_cursor(self, consumer: str) -> int:
        def run(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT seq FROM cursors WHERE consumer = ?", (consumer,)).fetchone()
            return row[0] if row else 0
        return await self._read(run)

    async def set_cursor(self, consumer: str, seq: int) -> None:
        async with self._write_lock:
            await self._write(lambda c: c.execute(
                "INSERT INTO cursors VALUES (?, ?) ON CONFLICT (consumer) "
                "DO UPDATE SET seq = excluded.seq", (consumer, seq)))

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._read(lambda c: sql_search.run(c, query))

    async def expunge(self, type: str, ids: Sequence[str]) -> int:
        def run(c: sqlite3.Connection) -> int:
            found = 0
            for id in ids:
                row = c.execute("SELECT rid FROM resources WHERE type = ? AND id = ?",
                                (type, id)).fetchone()
                if row is not None:
                    found += 1
                    index.replace(c, row[0], (), had_rows=True, type=type)
                    c.execute("DELETE FROM resources WHERE rid = ?", (row[0],))
                c.execute("DELETE FROM history WHERE type = ? AND id = ?", (type, id))
                c.execute("DELETE FROM unique_keys WHERE type = ? AND id = ?", (type, id))
            # moves the resources' generation (reads.py), which only new versions move
            # otherwise: remembered point reads of an expunged resource are dropped
            c.execute("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'history'")
            return found
        return await self._in_transaction(run)

    # -- the audit log -------------------------------------------------------------------

    async def audit_commit(self, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
        """Reads' records, committed in groups all day long. A trip to the writer thread
        costs more than the group's SQL (the thread wake-ups: docs/performance.md), so
        when the database's write lock is free the group is written right here, on the
        event loop's own connection, the one its point reads use: a connection's own
        commits leave its page cache and its `data_version` (the point-read cache,
        reads.py) alone, where another connection's commit would discard both before
        every group's next reads. It never waits for the lock there (busy_timeout 0) and
        never checkpoints (the writer thread does, see `_audit_appended`). If another
        process holds the lock, the group takes the writer thread, which waits for it.
        When the log's reference index is due, the group brings it up to date in the
        same transaction (for the same reason: on another connection, the index's
        commit would empty the point-read cache)."""
        index = self._upkeep_due(len(drafts))

        def append(c: sqlite3.Connection) -> None:
            audit.append(c, drafts, seal)
            if index:
                audit.index_pending(c, _AUDIT_INDEX_MOST)
        async with self._write_lock:  # this process's writer thread is between units
            if not self._on_loop_connection(append):
                await self._write(lambda c: _transaction(c, append))
        if index:
            self._start_upkeep(self._write(_checkpoint))

    def _audit_appended(self, records: int) -> None:
        """Records appended by units of work: every `_AUDIT_INDEX_BATCH` records, on the
        writer thread (which SQLite leaves free to run beside the loop), index the log's
        references (sqlite/audit.py says why) and fold the WAL back into the database,
        which the loop's connection never does (a checkpoint writes and syncs many pages).
        Counted in records, not by the WAL's size: the file keeps its size after a
        checkpoint, so a size test checkpointed after every group once the WAL had grown
        (~12% of the CPU of reads)."""
        if self._upkeep_due(records):
            self._start_upkeep(self._audit_upkeep())

    def _upkeep_due(self, records: int) -> bool:
        """Count appended records; True, and the count starts again, when the index is due
        and no upkeep is running."""
        self._audit_unindexed += records
        if self._audit_unindexed < _AUDIT_INDEX_BATCH or self._audit_indexing is not None:
            return False
        self._audit_unindexed = 0
        return True

    def _start_upkeep(self, work: Awaitable[Any]) -> None:
        self._audit_indexing = asyncio.ensure_future(work)
        self._audit_indexing.add_done_callback(self._audit_indexed)

    async def _audit_upkeep(self) -> int:
        indexed = await self.audit_index()
        await self._write(_checkpoint)
        return indexed

    def _audit_indexed(self, done: asyncio.Future[Any]) -> None:
        self._audit_indexing = None
        _retrieved(done)

    async def audit_index(self) -> int:
        """Index every record appended so far (any process's); returns how many."""
        total = 0
        while True:
            done = await self._in_transaction(
                lambda c: audit.index_pending(c, _AUDIT_INDEX_MOST))
            total += done
            if done == 0:
                return total

    def _on_loop_connection(self, fn: Callable[[sqlite3.Connection], None]) -> bool:
        """Run `fn` in a write transaction on the loop's connection; False (and nothing
        done) when another connection holds the write lock."""
        conn = self._thread_connection(query_only=True)
        if conn is not self._loop_writable:
            # Once, not around every group: writable, never checkpointing (the writer
            # thread does). Its reads keep their busy timeout (they wait only while a
            # crashed writer's WAL is recovered); the write lock is never waited for here.
            for pragma in ("query_only=OFF", "wal_autocheckpoint=0"):
                conn.execute(f"PRAGMA {pragma}")
            self._loop_writable = conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        _finish(conn, fn)
        return True

    async def audit_head(self) -> AuditEntry | None:
        return audit.head(self._thread_connection(query_only=True))  # a point read, as read()

    async def audit_get(self, seq: int) -> AuditEntry | None:
        return audit.get(self._thread_connection(query_only=True), seq)

    async def audit_list(self, span: AuditSpan) -> list[AuditEntry]:
        return await self._read(lambda c: _snapshot(c, lambda c: audit.listing(c, span)))

    async def audit_count(self, span: AuditSpan) -> int:
        return await self._read(lambda c: _snapshot(c, lambda c: audit.count(c, span)))

    async def audit_purge(self, upto: int) -> int:
        return await self._in_transaction(lambda c: audit.purge(c, upto))

    async def audit_restore(self, entries: Sequence[AuditEntry]) -> None:
        await self._in_transaction(lambda c: audit.restore(c, entries))

    async def _in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._write_lock:
            return await self._write(lambda c: _transaction(c, fn))

    # -- documents ---------------------------------------------------------------------

    async def doc_get(self, collection: str, key: str) -> Document | None:
        now = int(time.time())

        def run(c: sqlite3.Connection) -> Document | None:
            row = c.execute("SELECT rev, body, expires_at FROM documents WHERE collection = ? "
                            "AND key = ? AND (expires_at IS NULL OR expires_at > ?)",
                            (collection, key, now)).fetchone()
            return Document(collection, key, row[0], bytes(row[1]), row[2]) if row else None
        return await self._read(run)

    async def doc_put(self, collection: str, key: str, body: bytes, *,
                      expected_rev: int | None = None, expires_at: int | None = None) -> int:
        async with self._write_lock:
            return await self._write(
                lambda c: _doc_put(c, collection, key, body, expected_rev, expires_at))

    async def doc_delete(self, collection: str, key: str,
                         expected_rev: int | None = None) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            sql = "DELETE FROM documents WHERE collection = ? AND key = ?"
            args: list[Any] = [collection, key]
            if expected_rev is not None:
                sql += " AND rev = ?"
                args.append(expected_rev)
            return c.execute(sql, args).rowcount > 0
        async with self._write_lock:
            return await self._write(run)

    async def doc_list(self, collection: str, prefix: str = "",
                       limit: int = 1000) -> list[Document]:
        now = int(time.time())

        def run(c: sqlite3.Connection) -> list[Document]:
            rows = c.execute(
                "SELECT key, rev, body, expires_at FROM documents WHERE collection = ? AND "
                "key >= ? AND key < ? AND (expires_at IS NULL OR expires_at > ?) "
                "ORDER BY key LIMIT ?", (collection, prefix, prefix + "\U0010ffff", now, limit))
            return [Document(collection, r[0], r[1], bytes(r[2]), r[3]) for r in rows]
        return await self._read(run)


class SqliteUnitOfWork:
    """Runs on the writer thread inside BEGIN IMMEDIATE ... COMMIT/ROLLBACK.

    Puts are buffered and sent to the writer thread in batches, in the background: the
    writer inserts one batch while the caller validates and indexes the next (both cores
    busy), and a hop per statement (a GIL hand-off and wake-up each) costs more than the
    statement; a transaction Bundle makes thousands of puts. Reads in the unit (current,
    search) flush first and wait, so they see the unit's writes; BEGIN IMMEDIATE keeps
    other writers out for the unit's whole life. So a version the unit read (`current`, a
    search's matches) or wrote stays current until the unit itself writes that resource
    again: reading it, or putting a version based on it, costs no trip.

    Version checks stay immediate: the unit knows the version of everything it read or
    wrote, so a put based on another version raises VersionConflict at once and is not
    applied (the unit stays usable); a put for a resource the unit has not seen yet is
    checked on the writer thread right away, except a create (expected version 0), whose
    check rides with its batch: ids of creates are fresh (server-assigned), so that check
    cannot fail in practice, and if it ever did the unit could not commit. A put that
    claims unique keys is written at once, so UniqueKeyTaken reaches its caller. A failed
    background batch fails every later trip of the unit, the COMMIT included.
    """

    _BATCH = 64  # puts per background write

    def __init__(self, store: SqliteResourceStore) -> None:
        self._store = store
        self._pending: list[tuple[Any, ...]] = []
        self._audit: list[tuple[Sequence[AuditDraft], Sealer]] = []  # appended at commit
        self._docs: list[tuple[Any, ...]] = []  # document writes, made at commit
        self._known: dict[tuple[str, str], int] = {}  # (type, id) -> version in this unit
        # current versions this unit read or wrote: the unit holds the write lock, so
        # they stay current and reading one again needs no trip (a write rule's caller
        # reads back what the rule may have written again: Repository._write)
        self._read: dict[tuple[str, str], ResourceVersion | None] = {}
        self._begun = False
        self._failed: BaseException | None = None  # set on the writer thread

    def hop(self, fn: Callable[[sqlite3.Connection], T] | None = None) -> Awaitable[T | None]:
        """One trip to the writer thread: BEGIN (first time), buffered puts, then `fn`.

        Trips run in the order they are made (one writer thread, FIFO)."""
        pending, self._pending = self._pending, []

        def run(c: sqlite3.Connection) -> T | None:
            if self._failed is not None:
                raise self._failed  # an earlier batch failed: nothing more, no COMMIT
            try:
                if not self._begun:
                    c.execute("BEGIN IMMEDIATE")
                    self._begun = True
                rows = index.Rows()  # the batch's index rows go in together
                for args in pending:
                    _put(c, *args, rows=rows)
                rows.insert(c)
                if fn is _commit:
                    for args in self._docs:
                        _doc_put(c, *args)
                    for drafts, seal in self._audit:  # last: the head is final only now
                        audit.append(c, drafts, seal)
            except BaseException as exc:
                self._failed = exc
                raise
            return fn(c) if fn is not None else None
        # queued at once: the writer inserts this batch while the caller goes on
        task = self._store._submit(run)
        task.add_done_callback(_retrieved)
        return task

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        if (type, id) in self._read:
            return self._read[(type, id)]
        found = await self.hop(lambda c: _current(c, type, id))
        self._known[(type, id)] = found.version if found else 0
        self._read[(type, id)] = found
        return found

    async def put(self, version: ResourceVersion, index_entries: Sequence[IndexEntry], *,
                  expected_version: int, unique_keys: Sequence[str] = ()) -> None:
        key = (version.type, version.id)
        have = self._known.get(key)
        if have is None and expected_version != 0:
            have = await self.hop(lambda c: _version_of(c, *key))
        if have is not None and have != expected_version:
            raise VersionConflict(f"{version.type}/{version.id} is at version {have}, "
                                  f"not {expected_version}")
        args = (version, index_entries, expected_version, unique_keys)
        if unique_keys:
            await self.hop(lambda c: _put(c, *args))  # now: its caller may handle a refusal
        else:
            self._pending.append(args)
            if len(self._pending) >= self._BATCH:
                self.hop()  # in the background; its failure surfaces at the next trip
        self._known[key] = version.version
        self._read[key] = version  # its seq is assigned at the insert: unknown here

    async def search(self, query: SearchQuery) -> SearchResult:
        return (await self.search_many([query]))[0]

    async def search_many(self, queries: Sequence[SearchQuery]) -> list[SearchResult]:
        """Several searches in one trip, results in order (SQLite only: the HL7 v2
        bridge's lookups, ~8 per message; a trip each cost more than their SQL, the
        thread wake-ups and GIL hand-offs: docs/performance.md, HL7 v2 inbound); identity
        lookups (`_id`, `identifier`) all in one statement (`identities`)."""
        results = await self.hop(lambda c: identities.run_many(c, queries))
        for result in results:
            for v in result.matches:  # read inside the unit: current until it writes it
                self._known[(v.type, v.id)] = v.version
                self._read[(v.type, v.id)] = v
        return results

    async def reindex(self, type: str, id: str, version: int,
                      index_entries: Sequence[IndexEntry]) -> bool:
        return await self.hop(lambda c: index.reindex(c, type, id, version, index_entries))

    async def doc_put(self, collection: str, key: str, body: bytes, *,
                      expected_rev: int | None = None, expires_at: int | None = None) -> None:
        self._docs.append((collection, key, body, expected_rev, expires_at))  # in the COMMIT trip

    async def audit_append(self, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
        # The unit holds the write lock from its first trip to COMMIT, so appending in the
        # commit's own trip costs nothing extra and cannot lose the position to anyone.
        if drafts:
            self._audit.append((drafts, seal))


_BUSY_MS = 30_000  # how long a statement waits for a lock another connection holds
# audit records indexed together (sorted, they share pages); also how often the WAL is
# checkpointed while only reads' records are written (~4 MB of WAL, ~1,000 pages: SQLite's
# own autocheckpoint size)
_AUDIT_INDEX_BATCH = 2_000
_AUDIT_INDEX_MOST = 4 * _AUDIT_INDEX_BATCH  # records one indexing transaction takes on


def _transaction[R](c: sqlite3.Connection, fn: Callable[[sqlite3.Connection], R]) -> R:
    c.execute("BEGIN IMMEDIATE")
    return _finish(c, fn)


def _checkpoint(c: sqlite3.Connection) -> None:
    c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _snapshot[R](c: sqlite3.Connection, fn: Callable[[sqlite3.Connection], R]) -> R:
    """Run `fn`'s statements in one read transaction: one view of the database."""
    c.execute("BEGIN")
    try:
        return fn(c)
    finally:
        c.execute("COMMIT")


def _finish[R](c: sqlite3.Connection, fn: Callable[[sqlite3.Connection], R]) -> R:
    """Run `fn` in the transaction `c` has begun; COMMIT, or ROLLBACK and raise."""
    try:
        out = fn(c)
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    return out


def _locked(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _doc_put(c: sqlite3.Connection, collection: str, key: str, body: bytes,
             expected_rev: int | None, expires_at: int | None) -> int:
    row = c.execute("SELECT rev, expires_at FROM documents WHERE collection = ? AND "
                    "key = ?", (collection, key)).fetchone()
    live = row is not None and (row[1] is None or row[1] > int(time.time()))
    have = row[0] if live else 0
    if expected_rev is not None and expected_rev != have:
        raise VersionConflict(f"document {collection}/{key} is at rev {have}, "
                              f"not {expected_rev}")
    rev = (row[0] if row else 0) + 1
    c.execute("INSERT INTO documents VALUES (?,?,?,?,?) ON CONFLICT (collection, key) "
              "DO UPDATE SET rev = excluded.rev, body = excluded.body, "
              "expires_at = excluded.expires_at",
              (collection, key, rev, body, expires_at))
    return rev


def _version_of(c: sqlite3.Connection, type: str, id: str) -> int:
    row = c.execute("SELECT version FROM resources WHERE type = ? AND id = ?",
                    (type, id)).fetchone()
    return row[0] if row else 0


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A background batch's failure is re-raised by the unit's next trip, not here."""
    if not task.cancelled():
        task.exception()


def _commit(c: sqlite3.Connection) -> None:
    c.execute("COMMIT")


def _rollback(c: sqlite3.Connection) -> None:
    if c.in_transaction:  # nothing begun yet, or the failure came after COMMIT
        c.execute("ROLLBACK")


def _current(c: sqlite3.Connection, type: str, id: str) -> ResourceVersion | None:
    row = c.execute(
        f"SELECT {_VERSION_COLUMNS} FROM resources r JOIN history h ON h.seq = r.seq "
        "WHERE r.type = ? AND r.id = ?", (type, id),
    ).fetchone()
    return version_from_row(row) if row else None


def _put(c: sqlite3.Connection, v: ResourceVersion, entries: Sequence[IndexEntry],
         expected_version: int, unique_keys: Sequence[str],
         rows: index.Rows | None = None) -> None:
    """Write one version. `rows`: collect its index rows there (the caller inserts them
    with the rest of its batch) instead of inserting them now."""
    current = c.execute("SELECT rid, version, deleted FROM resources WHERE type = ? AND id = ?",
                        (v.type, v.id)).fetchone()
    if (current[1] if current else 0) != expected_version:
        raise VersionConflict(f"{v.type}/{v.id} is at version {current[1] if current else 0}, "
                              f"not {expected_version}")
    # Check keys before writing anything: a caller may catch the refusal and go on with
    # the unit, so a refused put must leave no rows behind.
    for key in unique_keys:
        holder = c.execute("SELECT type, id FROM unique_keys WHERE key = ?", (key,)).fetchone()
        if holder and (holder[0], holder[1]) != (v.type, v.id):
            raise UniqueKeyTaken(key, (holder[0], holder[1]))
    seq = c.execute(
        "INSERT INTO history (type, id, version, last_updated, method, body) "
        "VALUES (?,?,?,?,?,?)", (v.type, v.id, v.version, v.last_updated, v.method, v.body),
    ).lastrowid
    deleted = 1 if v.deleted else 0
    if current:
        rid = current[0]
        c.execute("UPDATE resources SET version = ?, seq = ?, deleted = ? WHERE rid = ?",
                  (v.version, seq, deleted, rid))
        c.execute("DELETE FROM unique_keys WHERE type = ? AND id = ?", (v.type, v.id))
    else:
        rid = c.execute("INSERT INTO resources (type, id, version, seq, deleted) "
                        "VALUES (?,?,?,?,?)", (v.type, v.id, v.version, seq, deleted)).lastrowid
    entries = () if v.deleted else entries
    if rows is None:
        index.replace(c, rid, entries, had_rows=current is not None, type=v.type)
    else:
        if current is not None:
            if rows:  # this batch may hold rows of this very resource: in before deleting
                rows.insert(c)
            index.delete(c, rid)
        rows.add(rid, v.type, entries)
    if unique_keys:
        c.executemany("INSERT INTO unique_keys VALUES (?,?,?)",
                      [(key, v.type, v.id) for key in unique_keys])


def _history_sql(q: HistoryQuery, select: str) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if q.type is not None:
        where.append("h.type = ?")
        args.append(q.type)
    if q.id is not None:
        where.append("h.id = ?")
        args.append(q.id)
    if q.since is not None:
        where.append("h.last_updated >= ?")
        args.append(q.since)
    if q.before_seq is not None:
        where.append("h.seq < ?")
        args.append(q.before_seq)
    if q.at is not None:
        # the version of each resource that was current at `at`
        where.append("h.seq = (SELECT max(h2.seq) FROM history h2 WHERE h2.type = h.type "
                     "AND h2.id = h.id AND h2.last_updated <= ?)")
        args.append(q.at)
    sql = f"{select} FROM history h"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql, args
