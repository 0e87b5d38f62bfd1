"""The MongoDB adapter of the ResourceStore port, on PyMongo's async driver.

`open()` connects, creates the indexes (idempotent: `schema`), and runs one real
transaction to learn whether the deployment accepts them; without them it refuses to start
unless `allow_no_transactions` (FHIRPM_MONGO_ALLOW_NO_TRANSACTIONS) accepts weaker
guarantees. Units of work are transactions replayed on conflict (`unit`); reads, history
and the change log read the collections directly. Driver failures leave this class as
StoreErrors; nothing above storage sees PyMongo.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, IndexModel, ReadPreference
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhirpm.search.query import SearchQuery, SearchResult
from fhirpm.storage.mongo import audit, documents, history, schema, txn, writes
from fhirpm.storage.mongo import search as mongo_search
from fhirpm.storage.mongo.unit import BufferedUnit, TransactionalUnit
from fhirpm.storage.port import (
    AuditDraft,
    AuditEntry,
    AuditSpan,
    Document,
    HistoryQuery,
    ResourceVersion,
    Sealer,
    StoreError,
    UnitOfWork,
)

log = logging.getLogger("fhirpm.storage.mongo")

T = TypeVar("T")
DEFAULT_DATABASE = "fhirpm"
TRANSACTION_OPTIONS: dict[str, Any] = {
    "read_concern": ReadConcern("snapshot"),
    "write_concern": WriteConcern("majority"),
    "read_preference": ReadPreference.PRIMARY,
}


def redact(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    return re.sub(r"//[^@/]*@", "//", url)


class MongoResourceStore:
    def __init__(self, url: str, *, allow_no_transactions: bool = False,
                 use_transactions: bool | None = None) -> None:
        """`use_transactions`: None probes the deployment; False skips transactions even
        where they would work (tests of the degraded mode)."""
        if not url.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"not a MongoDB URL: {redact(url)!r}")
        self.url = url
        self._allow_no_transactions = allow_no_transactions or use_transactions is False
        self._use_transactions = use_transactions
        self.transactions: bool | None = None  # known after open()
        self._client: AsyncMongoClient | None = None
        self._db: AsyncDatabase | None = None
        self._write_lock = asyncio.Lock()
        self._ddl_lock = asyncio.Lock()
        self._known_types: set[str] = set()
        self._commit_listeners: list[Callable[[], None]] = []

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> MongoResourceStore:
        return cls(url, **kwargs)

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every committed unit of work (change-feed wake-ups)."""
        self._commit_listeners.append(listener)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        client: AsyncMongoClient = AsyncMongoClient(self.url, appname="fhirpm",
                                                    uuidRepresentation="standard")
        db = client.get_default_database(default=DEFAULT_DATABASE)
        try:
            await client.admin.command("ping")
            await self._create_system_indexes(db)
            for name in await db.list_collection_names():
                if schema.is_type_name(name):
                    await self._create_type_indexes(db, name)
            reason = await txn.probe(db) if self._use_transactions is not False else "disabled"
        except PyMongoError as exc:
            await client.close()
            raise txn.unavailable(exc, f"opening {redact(self.url)}") from exc
        if reason is not None and not self._allow_no_transactions:
            await client.close()
            raise txn.refuse_without_transactions(reason, redact(self.url))
        if reason is not None:
            log.warning("MongoDB runs without transactions: units of work are not atomic",
                        extra={"store": redact(self.url), "reason": reason})
        self.transactions = reason is None
        self._client, self._db = client, db

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = self._db = None
        self._known_types.clear()

    @property
    def db(self) -> AsyncDatabase:
        if self._db is None:
            raise StoreError("the MongoDB store is not open")
        return self._db

    async def _create_system_indexes(self, db: AsyncDatabase) -> None:
        for name, specs in (*schema.SYSTEM_INDEXES.items(), (audit.COLLECTION, audit.INDEXES)):
            await db[name].create_indexes([IndexModel(keys, **opts) for keys, opts in specs])

    async def _create_type_indexes(self, db: AsyncDatabase, type: str) -> None:
        # createIndexes creates the collection too, and is a no-op when both exist
        await db[type].create_indexes(
            [IndexModel(keys, **opts) for keys, opts in schema.RESOURCE_INDEXES])
        self._known_types.add(type)

    async def ensure_type(self, type: str) -> None:
        """Create a type's collection and indexes before its first write (outside any
        transaction: DDL inside one is restricted)."""
        schema.check_type_name(type)
        if type in self._known_types:
            return
        async with self._ddl_lock:
            if type not in self._known_types:
                await self._guard(self._create_type_indexes(self.db, type), "creating indexes")

    async def _all_types(self) -> list[str]:
        names = await self.db.list_collection_names()
        return [n for n in names if schema.is_type_name(n)]

    async def _guard(self, work: Awaitable[T], where: str) -> T:
        try:
            return await work
        except PyMongoError as exc:
            raise txn.unavailable(exc, where) from exc

    # -- units of work ----------------------------------------------------------------

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        async with self._write_lock:
            if self.transactions:
                async with self._transaction() as unit:
                    yield unit
            else:
                buffered = BufferedUnit(self.db, self._search_in, self.ensure_type)
                yield buffered
                await self._guard(buffered.commit(), "applying a unit of work")
        for listener in self._commit_listeners:
            listener()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[TransactionalUnit]:
        unit = TransactionalUnit(self.db, self._search_in, self.ensure_type,
                                 TRANSACTION_OPTIONS)
        try:
            await self._guard(unit.begin(), "starting a transaction")
            try:
                yield unit
            except BaseException:
                await asyncio.shield(unit.rollback())
                raise
            await unit.commit()
        finally:
            await asyncio.shield(unit.close())

    async def _search_in(self, query: SearchQuery,
                         session: AsyncClientSession | None) -> SearchResult:
        return await mongo_search.run(self.db, session, query, self._all_types)

    # -- reads -----------------------------------------------------------------------

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        return await self._guard(writes.read_current(self.db, None, type, id), "read")

    async def vread(self, type: str, id: str, version: int) -> ResourceVersion | None:
        return await self._guard(history.vread(self.db, type, id, version), "vread")

    async def history(self, query: HistoryQuery) -> list[ResourceVersion]:
        return await self._guard(history.history(self.db, query), "history")

    async def history_count(self, query: HistoryQuery) -> int:
        return await self._guard(history.history_count(self.db, query), "history")

    async def changes(self, after_seq: int, limit: int) -> list[ResourceVersion]:
        return await self._guard(history.changes(self.db, after_seq, limit), "changes")

    async def get_cursor(self, consumer: str) -> int:
        doc = await self._guard(self.db[schema.CURSORS].find_one(
            {"_id": schema.check_text("consumer", consumer)}), "cursor")
        return doc["seq"] if doc else 0

    async def set_cursor(self, consumer: str, seq: int) -> None:
        await self._guard(self.db[schema.CURSORS].update_one(
            {"_id": schema.check_text("consumer", consumer)}, {"$set": {"seq": int(seq)}},
            upsert=True), "cursor")

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._guard(self._search_in(query, None), "search")

    # -- the audit log -------------------------------------------------------------------

    async def audit_commit(self, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
        async with self.unit_of_work() as unit:
            await unit.audit_append(drafts, seal)

    async def audit_head(self) -> AuditEntry | None:
        return await self._guard(audit.head(self.db), "audit log")

    async def audit_get(self, seq: int) -> AuditEntry | None:
        return await self._guard(audit.get(self.db, seq), "audit log")

    async def audit_list(self, span: AuditSpan) -> list[AuditEntry]:
        return await self._guard(audit.listing(self.db, span), "audit log")

    async def audit_count(self, span: AuditSpan) -> int:
        return await self._guard(audit.count(self.db, span), "audit log")

    async def audit_purge(self, upto: int) -> int:
        return await self._guard(audit.purge(self.db, upto), "audit log")

    async def audit_restore(self, entries: Sequence[AuditEntry]) -> None:
        await self._guard(audit.restore(self.db, entries), "audit log")

    # -- documents ---------------------------------------------------------------------

    async def doc_get(self, collection: str, key: str) -> Document | None:
        return await self._guard(documents.get(self.db, collection, key), "document")

    async def doc_put(self, collection: str, key: str, body: bytes, *,
                      expected_rev: int | None = None, expires_at: int | None = None) -> int:
        return await self._guard(documents.put(self.db, collection, key, body,
                                               expected_rev=expected_rev,
                                               expires_at=expires_at), "document")

    async def doc_delete(self, collection: str, key: str,
                         expected_rev: int | None = None) -> bool:
        return await self._guard(documents.delete(self.db, collection, key, expected_rev),
                                 "document")

    async def expunge(self, type: str, ids: Sequence[str]) -> int:
        schema.check_type_name(type)
        wanted = [schema.check_text("id", i) for i in ids]

        async def run() -> int:
            # current documents first: a crash between the two leaves history rows that a
            # repeated expunge removes; never a live resource without its history
            gone = await self.db[type].delete_many({"_id": {"$in": wanted}})
            await self.db[schema.HISTORY].delete_many({"t": type, "i": {"$in": wanted}})
            await self.db[schema.UNIQUE_KEYS].delete_many({"t": type, "i": {"$in": wanted}})
            return gone.deleted_count
        return await self._guard(run(), "expunge")

    async def doc_list(self, collection: str, prefix: str = "",
                       limit: int = 1000) -> list[Document]:
        return await self._guard(documents.list_prefix(self.db, collection, prefix, limit),
                                 "document")

