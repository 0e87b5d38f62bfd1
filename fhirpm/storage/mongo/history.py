"""History queries over the `history` collection (instance, type and system level).

`_id` is the change-log seq, so "newest first" is `_id` descending and the keyset cursor
(`before_seq`) is a range on `_id`. `_at` asks for the version of each resource that was
current at an instant: the newest version with `lu <= at`, found per resource with a
`$group` after a descending sort (portable: no `$top`, no window functions).
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern

from fhirpm.storage.mongo import schema
from fhirpm.storage.port import HistoryQuery, ResourceVersion


def _scope(q: HistoryQuery) -> dict[str, Any]:
    scope: dict[str, Any] = {}
    if q.type is not None:
        scope["t"] = schema.check_text("type", q.type)
    if q.id is not None:
        scope["i"] = schema.check_text("id", q.id)
    return scope


def _after_filters(q: HistoryQuery, with_cursor: bool) -> dict[str, Any]:
    where: dict[str, Any] = {}
    if q.since is not None:
        where["lu"] = {"$gte": schema.check_text("since", q.since)}
    if with_cursor and q.before_seq is not None:
        where["_id"] = {"$lt": int(q.before_seq)}
    return where


def _at_pipeline(q: HistoryQuery, with_cursor: bool) -> list[dict[str, Any]]:
    at = schema.check_text("at", q.at)
    pipeline: list[dict[str, Any]] = [
        {"$match": {**_scope(q), "lu": {"$lte": at}}},
        {"$sort": {"_id": -1}},
        {"$group": {"_id": {"t": "$t", "i": "$i"}, "doc": {"$first": "$$ROOT"}}},
        {"$replaceRoot": {"newRoot": "$doc"}},
    ]
    after = _after_filters(q, with_cursor)
    if after:
        pipeline.append({"$match": after})
    return pipeline


async def history(db: AsyncDatabase, q: HistoryQuery) -> list[ResourceVersion]:
    if q.count <= 0:
        return []
    collection = db[schema.HISTORY]
    if q.at is None:
        cursor = collection.find({**_scope(q), **_after_filters(q, True)})
        docs = await cursor.sort("_id", -1).limit(q.count).to_list()
    else:
        pipeline = [*_at_pipeline(q, True), {"$sort": {"_id": -1}}, {"$limit": q.count}]
        docs = await (await collection.aggregate(pipeline, allowDiskUse=True)).to_list()
    return [schema.version_from_history(d) for d in docs]


async def history_count(db: AsyncDatabase, q: HistoryQuery) -> int:
    collection = db[schema.HISTORY]
    if q.at is None:
        return await collection.count_documents({**_scope(q), **_after_filters(q, False)})
    pipeline = [*_at_pipeline(q, False), {"$count": "n"}]
    found = await (await collection.aggregate(pipeline, allowDiskUse=True)).to_list()
    return found[0]["n"] if found else 0


async def vread(db: AsyncDatabase, type: str, id: str, version: int) -> ResourceVersion | None:
    if not isinstance(type, str) or not isinstance(id, str):
        return None
    doc = await db[schema.HISTORY].find_one({"t": type, "i": id, "v": int(version)})
    return schema.version_from_history(doc) if doc else None


async def changes(db: AsyncDatabase, after_seq: int, limit: int) -> list[ResourceVersion]:
    if limit <= 0:
        return []
    # majority: never hand a consumer a commit that a failover could still roll back
    log = db.get_collection(schema.HISTORY, read_concern=ReadConcern("majority"))
    cursor = log.find({"_id": {"$gt": int(after_seq)}})
    docs = await cursor.sort("_id", 1).limit(limit).to_list()
    return [schema.version_from_history(d) for d in docs]
