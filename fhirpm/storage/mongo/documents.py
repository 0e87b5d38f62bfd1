"""Small compare-and-swap documents (`ResourceStore.doc_*`) in the `documents` collection.

Each write is one atomic single-document operation whose filter carries the condition
(`rev`, liveness), so no transaction is needed. `expires_at` (epoch seconds) is the truth
for reads; `exp`, the same instant as a BSON date, lets a TTL index purge expired records in
the background. Collection names and keys are only ever string values in filters.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bson import Binary
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from fhirpm.storage.mongo import schema
from fhirpm.storage.port import Document, VersionConflict


def _key(collection: str, key: str) -> dict[str, str]:
    return {"c": schema.check_text("collection", collection), "k": schema.check_text("key", key)}


def _live(now: int) -> dict[str, Any]:
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


def _document(doc: dict[str, Any]) -> Document:
    return Document(doc["c"], doc["k"], doc["rev"], bytes(doc["body"]), doc.get("expires_at"))


async def get(db: AsyncDatabase, collection: str, key: str) -> Document | None:
    doc = await db[schema.DOCUMENTS].find_one({**_key(collection, key), **_live(_now())})
    return _document(doc) if doc else None


async def put(db: AsyncDatabase, collection: str, key: str, body: bytes, *,
              expected_rev: int | None, expires_at: int | None,
              session: AsyncClientSession | None = None) -> int:
    """Write one document (compare-and-swap on `expected_rev`); `session`: inside that
    session's transaction (a unit of work's), where a lost race fails the unit."""
    if not isinstance(body, bytes):
        raise TypeError("document body must be bytes")
    expiry = int(expires_at) if expires_at is not None else None
    update = {"$inc": {"rev": 1}, "$set": {
        "body": Binary(body), "expires_at": expiry,
        "exp": datetime.fromtimestamp(expiry, UTC) if expiry is not None else None}}
    where = _key(collection, key)
    now = _now()
    if expected_rev is None:
        condition: dict[str, Any] = {}
    elif expected_rev == 0:
        # absent (then the upsert inserts) or expired; `$ne: None` because a null never
        # compares with a number (MongoDB says so, but say it for every server)
        condition = {"expires_at": {"$ne": None, "$lte": now}}
    else:
        condition = {"rev": int(expected_rev), **_live(now)}
    for _ in range(2):  # an unconditional upsert can lose one insert race; retry it once
        try:
            doc = await db[schema.DOCUMENTS].find_one_and_update(
                {**where, **condition}, update, upsert=expected_rev in (None, 0),
                return_document=ReturnDocument.AFTER, session=session)
        except DuplicateKeyError:
            if expected_rev is None and session is None:
                continue
            doc = None
        if doc is not None:
            return doc["rev"]
        break
    have = await get(db, collection, key) if session is None else None
    raise VersionConflict(f"document {collection}/{key} is at rev {have.rev if have else 0}, "
                          f"not {expected_rev}")


async def delete(db: AsyncDatabase, collection: str, key: str,
                 expected_rev: int | None) -> bool:
    where: dict[str, Any] = _key(collection, key)
    if expected_rev is not None:
        where["rev"] = int(expected_rev)
    result = await db[schema.DOCUMENTS].delete_one(where)
    return result.deleted_count > 0


async def list_prefix(db: AsyncDatabase, collection: str, prefix: str,
                      limit: int) -> list[Document]:
    if limit <= 0:
        return []
    where = {"c": schema.check_text("collection", collection),
             "k": {"$gte": schema.check_text("prefix", prefix), "$lt": prefix + "\U0010ffff"},
             **_live(_now())}
    docs = await db[schema.DOCUMENTS].find(where).sort("k", 1).limit(limit).to_list()
    return [_document(d) for d in docs]


def _now() -> int:
    return int(time.time())
