"""The write primitives a unit of work is made of, with or without a transaction.

`apply_put` stores one new current version (checking the expected version and claiming
unique keys before it writes anything); `finish` gives the unit's versions their change-log
seqs and appends them to `history`. Both take the session of the running transaction, or
None when the deployment runs without transactions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fhirpm.search.values import IndexEntry
from fhirpm.storage.mongo import schema
from fhirpm.storage.port import ResourceVersion, UniqueKeyTaken, VersionConflict

Session = AsyncClientSession | None


@dataclass(frozen=True, slots=True)
class Put:
    """One `UnitOfWork.put` call, kept so that the unit can be replayed."""

    version: ResourceVersion
    entries: tuple[IndexEntry, ...]
    expected_version: int
    unique_keys: tuple[str, ...]

    @classmethod
    def checked(cls, version: ResourceVersion, entries: Sequence[IndexEntry],
                expected_version: int, unique_keys: Sequence[str]) -> Put:
        schema.check_type_name(version.type)
        schema.check_text("id", version.id)
        for key in unique_keys:
            schema.check_text("unique key", key)
        if not isinstance(version.body, bytes):
            raise TypeError("body must be bytes")
        return cls(version, tuple(entries), int(expected_version), tuple(unique_keys))


async def read_current(db: AsyncDatabase, session: Session, type: str,
                       id: str) -> ResourceVersion | None:
    if not schema.is_type_name(type) or not isinstance(id, str):
        return None  # no such collection can exist: nothing was ever stored under it
    doc = await db[type].find_one({"_id": id}, schema.CURRENT_FIELDS, session=session)
    return schema.version_from_current(type, doc) if doc else None


def _conflict(v: ResourceVersion, expected: int) -> VersionConflict:
    # No read for the message: after a failed write a transaction may already be aborted.
    return VersionConflict(f"{v.type}/{v.id} is no longer at version {expected} "
                           "(another writer changed it)")


async def apply_put(db: AsyncDatabase, session: Session, put: Put) -> None:
    """One round trip for the common case: the version check is the write's own filter."""
    v = put.version
    collection = db[v.type]
    await _check_keys(db, session, v, put.unique_keys)
    fields = schema.current_fields(v, put.entries, has_keys=bool(put.unique_keys))
    if put.expected_version == 0:
        try:
            await collection.insert_one({"_id": v.id, "c": 0, "lv": 0, **fields},
                                        session=session)
        except DuplicateKeyError:
            raise _conflict(v, 0) from None  # it exists: created meanwhile
    else:
        before = await collection.find_one_and_update(
            {"_id": v.id, "v": put.expected_version}, {"$set": fields},
            projection={"k": 1, "del": 1}, session=session)
        if before is None:
            raise _conflict(v, put.expected_version)
        if before.get("del") and not v.deleted:  # re-created: live again from this commit
            await collection.update_one({"_id": v.id}, {"$set": {"lv": 0}}, session=session)
        if before.get("k"):
            await db[schema.UNIQUE_KEYS].delete_many({"t": v.type, "i": v.id}, session=session)
    await _claim_keys(db, session, v, put.unique_keys)


async def apply_reindex(db: AsyncDatabase, session: Session, type: str, id: str,
                        version: int, ix: Mapping[str, Any]) -> bool:
    """Replace the search values of type/id if it is live at `version` (no new version)."""
    result = await db[type].update_one({"_id": id, "v": version, "del": False},
                                       {"$set": {"ix": ix}}, session=session)
    return result.matched_count == 1


async def _check_keys(db: AsyncDatabase, session: Session, v: ResourceVersion,
                      keys: Sequence[str]) -> None:
    """Refuse keys held by another resource before anything is written."""
    if not keys:
        return
    holders = db[schema.UNIQUE_KEYS].find({"_id": {"$in": list(keys)}}, session=session)
    async for held in holders:
        if (held["t"], held["i"]) != (v.type, v.id):
            raise UniqueKeyTaken(held["_id"], (held["t"], held["i"]))


async def _claim_keys(db: AsyncDatabase, session: Session, v: ResourceVersion,
                      keys: Sequence[str]) -> None:
    if not keys:
        return
    docs = [{"_id": key, "t": v.type, "i": v.id} for key in dict.fromkeys(keys)]
    try:
        await db[schema.UNIQUE_KEYS].insert_many(docs, session=session)
    except BulkWriteError as exc:
        # a racing writer claimed a key after the check above
        errors = exc.details.get("writeErrors") or [{}]
        index = errors[0].get("index", 0)
        raise UniqueKeyTaken(docs[index]["_id"] if index < len(docs) else keys[0]) from None


async def finish(db: AsyncDatabase, session: Session, puts: Sequence[Put]) -> list[int]:
    """Allocate one seq per put from the counter and append the versions to `history`.

    Inside a transaction the counter increment is what orders commits (see `unit`)."""
    if not puts:
        return []
    counter = await db[schema.COUNTERS].find_one_and_update(
        {"_id": schema.SEQ_COUNTER}, {"$inc": {"n": len(puts)}}, upsert=True,
        return_document=ReturnDocument.AFTER, session=session)
    first = counter["n"] - len(puts) + 1
    seqs = list(range(first, first + len(puts)))
    try:
        await db[schema.HISTORY].insert_many(
            [schema.history_document(p.version, seq) for p, seq in zip(puts, seqs, strict=True)],
            session=session)
    except BulkWriteError as exc:
        raise VersionConflict(f"a version of this unit is already in the history: "
                              f"{_first_error(exc.details)}") from None
    stamps: dict[str, dict[str, dict[str, int]]] = {}  # type -> id -> {"seq", "c"}
    for put, seq in zip(puts, seqs, strict=True):
        stamp = stamps.setdefault(put.version.type, {}).setdefault(put.version.id, {})
        stamp["seq"] = seq
        if put.expected_version == 0:
            stamp.setdefault("c", seq)  # the creation order that unsorted searches follow
    for type, by_id in stamps.items():
        updates = []
        for id, stamp in by_id.items():
            updates.append(UpdateOne({"_id": id}, {"$set": stamp}))
            # live since this commit (created or re-created by the unit: lv was set to 0)
            updates.append(UpdateOne({"_id": id, "lv": 0}, {"$set": {"lv": stamp["seq"]}}))
        await db[type].bulk_write(updates, ordered=False, session=session)
    return seqs


def _first_error(details: Mapping[str, Any]) -> str:
    errors = details.get("writeErrors") or [{}]
    return str(errors[0].get("errmsg", "duplicate"))
