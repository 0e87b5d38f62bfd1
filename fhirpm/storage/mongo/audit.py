"""The audit log on MongoDB: one append-only collection, `_id` = seq.

An entry is `{_id: seq, r: recorded, refs: [...], p: payload, prev, h}`, indexed by
(refs, _id) (multikey: "what touched Patient/7", in seq order) and by `r`. The head
(seq and hash of the newest entry) is kept in the `counters` collection and moved inside
the appending transaction: every append writes that one document, so two transactions
appending at once conflict (WriteConflict, a transient error: the loser's unit of work
is replayed after the winner, and seals its entries after the winner's). It also survives
a purge of every entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bson import Binary
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhirpm.storage.mongo import schema
from fhirpm.storage.port import AUDIT_GENESIS, AuditDraft, AuditEntry, AuditSpan, Sealer

COLLECTION = "audit_log"
HEAD = "audit-head"  # the counters document holding the head

INDEXES: list[tuple[list[tuple[str, int]], dict[str, Any]]] = [
    ([("refs", 1), ("_id", 1)], {"name": "ref_seq"}),
    ([("r", 1)], {"name": "recorded"}),
]

Session = AsyncClientSession | None


async def append(db: AsyncDatabase, session: Session, drafts: Sequence[AuditDraft],
                 seal: Sealer) -> None:
    head = await db[schema.COUNTERS].find_one({"_id": HEAD}, session=session)
    seq, previous = (head["seq"], head["hash"]) if head else (0, AUDIT_GENESIS)
    docs = []
    for draft in drafts:
        seq += 1
        hash_ = seal(draft.payload, seq, previous)
        docs.append({"_id": seq, "r": draft.recorded, "refs": list(dict.fromkeys(draft.refs)),
                     "p": Binary(draft.payload), "prev": previous, "h": hash_})
        previous = hash_
    # the head moves first: a concurrent appender conflicts on this document
    await db[schema.COUNTERS].find_one_and_update(
        {"_id": HEAD}, {"$set": {"seq": seq, "hash": previous}}, upsert=True,
        return_document=ReturnDocument.AFTER, session=session)
    await db[COLLECTION].insert_many(docs, session=session)


async def restore(db: AsyncDatabase, entries: Sequence[AuditEntry]) -> None:
    if not entries:
        return
    await db[COLLECTION].insert_many(
        [{"_id": e.seq, "r": e.recorded, "refs": list(dict.fromkeys(e.refs)),
          "p": Binary(e.payload), "prev": e.previous, "h": e.hash} for e in entries])
    last = max(entries, key=lambda e: e.seq)
    known = await db[schema.COUNTERS].find_one({"_id": HEAD})
    if known is None or known["seq"] < last.seq:
        await db[schema.COUNTERS].replace_one(
            {"_id": HEAD}, {"seq": last.seq, "hash": last.hash}, upsert=True)


async def head(db: AsyncDatabase) -> AuditEntry | None:
    doc = await db[COLLECTION].find_one({}, sort=[("_id", -1)])
    return _entry(doc) if doc else None


async def get(db: AsyncDatabase, seq: int) -> AuditEntry | None:
    doc = await db[COLLECTION].find_one({"_id": int(seq)})
    return _entry(doc) if doc else None


async def listing(db: AsyncDatabase, span: AuditSpan) -> list[AuditEntry]:
    cursor = db[COLLECTION].find(_filter(span), sort=[("_id", -1 if span.descending else 1)],
                                 limit=int(span.limit))
    return [_entry(doc) async for doc in cursor]


async def count(db: AsyncDatabase, span: AuditSpan) -> int:
    return await db[COLLECTION].count_documents(_filter(span))


def _filter(span: AuditSpan) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if span.ref is not None:
        query["refs"] = schema.check_text("ref", span.ref)
    recorded: dict[str, str] = {}
    if span.since is not None:
        recorded["$gte"] = schema.check_text("since", span.since)
    if span.until is not None:
        recorded["$lte"] = schema.check_text("until", span.until)
    if recorded:
        query["r"] = recorded
    seq: dict[str, int] = {}
    if span.after is not None:
        seq["$gt"] = int(span.after)
    if span.before is not None:
        seq["$lt"] = int(span.before)
    if seq:
        query["_id"] = seq
    return query


async def purge(db: AsyncDatabase, upto: int) -> int:
    return (await db[COLLECTION].delete_many({"_id": {"$lte": int(upto)}})).deleted_count


def _entry(doc: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(doc["_id"], doc["r"], tuple(doc.get("refs") or ()), bytes(doc["p"]),
                      doc["prev"], doc["h"])
