"""Store construction and store-specific peeks for the contract suite.

Everything the suite asserts goes through the ResourceStore port, except the stored index
entries, which the port writes but never hands back: `stored_index` reads them from each
adapter's own tables or documents.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pymongo import AsyncMongoClient

from fhirpm.search.values import (
    DateValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from fhirpm.storage.mongo import MongoResourceStore
from fhirpm.storage.mongo.schema import index_entries
from fhirpm.storage.port import ResourceStore, ResourceVersion
from fhirpm.storage.sqlite import SqliteResourceStore

STORES = ("sqlite", "mongo")


def make_store(kind: str, tmp_path: Path, mongo_url: str | None, **kwargs: object
               ) -> ResourceStore:
    if kind == "sqlite":
        return SqliteResourceStore(str(tmp_path / "contract.db"))
    assert mongo_url is not None
    return MongoResourceStore(mongo_url, **kwargs)  # type: ignore[arg-type]


def version(type: str, id: str, n: int, body: bytes | None = None, *,
            lu: str = "2024-01-01T00:00:00.000000Z", method: str | None = None
            ) -> ResourceVersion:
    """A version as the repository would hand it to the store."""
    method = method or ("POST" if n == 1 else "PUT")
    if method == "DELETE":
        return ResourceVersion(type, id, n, lu, "DELETE", b"")
    if body is None:
        body = (b'{"resourceType":"%s","id":"%s","meta":{"versionId":"%d","lastUpdated":"%s"}}'
                % (type.encode(), id.encode(), n, lu.encode()))
    return ResourceVersion(type, id, n, lu, method, body)


_SQLITE_READERS = {
    "ix_string": lambda r: StringValue(r[0], r[1]),
    "ix_token": lambda r: TokenValue(r[0], r[1], r[2]),
    "ix_reference": lambda r: ReferenceValue(
        r[0], r[1], r[2], r[3], TokenValue(r[4], r[5]) if r[4] or r[5] else None),
    "ix_date": lambda r: DateValue(r[0], r[1]),
    "ix_number": lambda r: NumberValue(r[0], r[1], r[2]),
    "ix_quantity": lambda r: QuantityValue(r[0], r[1], r[2], r[3], r[4], r[5]),
    "ix_uri": lambda r: UriValue(r[0]),
}
_SQLITE_COLUMNS = {
    "ix_string": "norm, raw", "ix_token": "system, code, text",
    "ix_reference": "ref_type, ref_id, url, version, id_system, id_value",
    "ix_date": "lo, hi", "ix_number": "value, lo, hi",
    "ix_quantity": "value, lo, hi, system, code, unit", "ix_uri": "uri",
}


async def stored_index(store: ResourceStore, type: str, id: str) -> list[IndexEntry]:
    """The index entries the store keeps for the current version of type/id."""
    if isinstance(store, SqliteResourceStore):
        with sqlite3.connect(store.path) as conn:
            row = conn.execute("SELECT rid FROM resources WHERE type = ? AND id = ?",
                               (type, id)).fetchone()
            if row is None:
                return []
            found = []
            for table, make in _SQLITE_READERS.items():
                rows = conn.execute(f"SELECT param, {_SQLITE_COLUMNS[table]} FROM {table} "
                                    "WHERE rid = ?", (row[0],))
                # the SQLite index qualifies codes by type ("Patient.name"; see index.py)
                found += [IndexEntry(r[0].removeprefix(f"{type}."), make(r[1:])) for r in rows]
            return found
    assert isinstance(store, MongoResourceStore)
    client: AsyncMongoClient = AsyncMongoClient(store.url)
    try:
        doc = await client.get_default_database()[type].find_one({"_id": id})
    finally:
        await client.close()
    return index_entries(doc.get("ix", {})) if doc else []
