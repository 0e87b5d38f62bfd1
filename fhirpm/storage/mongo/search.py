"""Run a SearchQuery on MongoDB: one aggregation per page, keyset paging, totals, includes.

## The pipeline

Per context type: a first `$match` with the live-resource and snapshot conditions and
every clause that needs no lookup (index-driven: `(del, c)` or a `(p, value)` multikey
index), then the chain and `_has` lookups of `clauses`, then a `$match` on what they found.
Several types (system search) are combined with `$unionWith`, each branch compiled for its
own type. Sort values are computed per document with `$filter`/`$map`/`$reduce` over the
parameter's values (min ascending, max descending; dates by `lo` ascending and `hi`
descending), each with a "missing" flag that sorts missing values last in either direction;
ties and unsorted searches follow creation order `c` (the seq that created the resource).

## Paging: keyset cursors over a pinned snapshot

A page ends at a position (its last document's sort values, `c`, type and id); the next
page starts strictly after it (`previous`: strictly before it, read in reverse), so writes
between pages never shift, repeat or skip an unchanged resource. The first page pins the
change-log seq it saw; every page only returns resources live since then (`lv <=
snapshot`: created or re-created later, they never appear; deleted, they drop out; updated,
they appear once), and the total is computed once and carried by the cursor, an opaque
base64url JSON [snapshot, total, backward, position] like the SQLite adapter's.

## Includes

`_include` follows the page's local references (read from their `ix.ref`) to live targets
fetched by `_id`; `_revinclude` finds referrers on the indexed join key `ix.ref.k`; both
repeat for `:iterate` up to `max_include`, in creation order. Only the page's documents are
visited in Python, never a collection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhirpm.search import cursor_token
from fhirpm.search.query import Include, SearchQuery, SearchResult, SortKey, indexed_as
from fhirpm.storage.mongo import schema
from fhirpm.storage.mongo.clauses import KIND_OF_TYPE, Compiler, all_of
from fhirpm.storage.port import ResourceVersion

ESTIMATE_CAP = 10_000
TypeLister = Callable[[], Awaitable[Sequence[str]]]
Stage = dict[str, Any]
_ROW_FIELDS = {**schema.CURRENT_FIELDS, "c": 1, "_t": 1}


@dataclass(frozen=True, slots=True)
class Cursor:
    snapshot: int
    total: int | None = None
    backward: bool = False
    position: tuple | None = None  # (missing flag, value) per sort key, then c, type, id

    def encode(self) -> str:
        return cursor_token.pack([self.snapshot, self.total, self.backward,
                                  list(self.position) if self.position is not None else None])

    @classmethod
    def decode(cls, token: str, width: int) -> Cursor:
        snapshot, total, backward, position = cursor_token.unpack(token, 4)
        ok = (isinstance(snapshot, int) and (total is None or isinstance(total, int))
              and isinstance(backward, bool)
              and (position is None or (isinstance(position, list)
                                        and len(position) == width
                                        and isinstance(position[-3], int)
                                        and all(isinstance(p, str) for p in position[-2:])
                                        and all(not isinstance(p, dict | list)
                                                for p in position))))
        if not ok:
            raise cursor_token.refused()
        return cls(snapshot, total, backward, tuple(position) if position else None)


# -- compiling ----------------------------------------------------------------------------

def type_pipeline(query: SearchQuery, type: str, snapshot: int) -> list[Stage]:
    """Live resources of `type` in the snapshot that satisfy every clause."""
    compiler = Compiler(query.aliases)
    early: list[dict[str, Any]] = [{"del": False, "lv": {"$lte": snapshot}}]
    late: list[dict[str, Any]] = []
    for clause in query.where:
        before = len(compiler.stages)
        condition = compiler.clause(clause, type)
        (early if len(compiler.stages) == before else late).append(condition)
    stages: list[Stage] = [{"$match": all_of(early)}, *compiler.stages]
    if late:
        stages.append({"$match": all_of(late)})
    stages.append({"$addFields": {"_t": {"$literal": type}}})
    return stages


def matching(query: SearchQuery, types: Sequence[str], snapshot: int) -> list[Stage]:
    """Every type's matches in one stream (the first type's collection runs the pipeline)."""
    stages = type_pipeline(query, types[0], snapshot)
    for other in types[1:]:
        stages.append({"$unionWith": {"coll": other,
                                      "pipeline": type_pipeline(query, other, snapshot)}})
    return stages


def _sort_code(key: SortKey, types: Sequence[str],
               aliases: Mapping[str, Mapping[str, str]]) -> Any:
    """The entries' code `key` reads: per type (`_t`) where one of `types` aliases it."""
    code: Any = {"$literal": key.param}
    for type_ in types:
        alias = indexed_as(aliases, type_, key.param)
        if alias != key.param:
            code = {"$cond": [{"$eq": ["$_t", type_]}, {"$literal": alias}, code]}
    return code


def _sort_value(key: SortKey, code: Any) -> Any:
    if key.param == "_id":
        return "$_id"
    kind = KIND_OF_TYPE.get(key.type)
    if kind is None:
        return None
    field: Any = {
        "str": "$$e.n", "tok": "$$e.c", "num": "$$e.v", "qty": "$$e.v", "uri": "$$e.u",
        "date": "$$e.hi" if key.descending else "$$e.lo",
        "ref": {"$ifNull": ["$$e.u", {"$cond": [
            {"$and": [{"$ne": [{"$ifNull": ["$$e.t", None]}, None]},
                      {"$ne": [{"$ifNull": ["$$e.i", None]}, None]}]},
            {"$concat": ["$$e.t", "/", "$$e.i"]}, None]}]},
    }[kind]
    values = {"$map": {"input": {"$filter": {
        "input": {"$ifNull": [f"$ix.{kind}", []]}, "as": "e",
        "cond": {"$eq": ["$$e.p", code]}}}, "as": "e", "in": field}}
    better = "$gt" if key.descending else "$lt"
    # min/max by $reduce: portable (no single-array $min/$max), skipping missing values
    return {"$reduce": {"input": values, "initialValue": None, "in": {"$cond": [
        {"$or": [{"$eq": ["$$value", None]},
                 {"$and": [{"$ne": ["$$this", None]}, {better: ["$$this", "$$value"]}]}]},
        {"$ifNull": ["$$this", "$$value"]}, "$$value"]}}}


def sort_stages(sort: Sequence[SortKey], types: Sequence[str] = (),
                aliases: Mapping[str, Mapping[str, str]] | None = None) -> list[Stage]:
    if not sort:
        return []
    values = {f"_v{i}": _sort_value(k, _sort_code(k, types, aliases or {}))
              for i, k in enumerate(sort)}
    flags = {f"_m{i}": {"$cond": [{"$eq": [{"$ifNull": [f"$_v{i}", None]}, None]}, 1, 0]}
             for i in range(len(sort))}
    return [{"$addFields": values}, {"$addFields": flags}]


def columns(sort: Sequence[SortKey], backward: bool) -> list[tuple[str, bool]]:
    """(field, descending) in page order: per key missing flag then value; c, type, id."""
    out: list[tuple[str, bool]] = []
    for i, key in enumerate(sort):
        out += [(f"_m{i}", False), (f"_v{i}", key.descending)]
    out += [("c", False), ("_t", False), ("_id", False)]
    return [(f, not d) for f, d in out] if backward else out


def after(cols: list[tuple[str, bool]], position: Sequence[Any]) -> dict[str, Any]:
    """Documents strictly after `position` in the lexicographic order of `cols`."""
    options = []
    for i, (field, descending) in enumerate(cols):
        if position[i] is None:
            continue  # a missing value has nothing after it within its own flag group
        equal = {f: p for (f, _), p in zip(cols[:i], position[:i], strict=True)}
        options.append({**equal, field: {"$lt" if descending else "$gt": position[i]}})
    return {"$or": options} if options else {"_id": {"$in": []}}


def position_of(doc: dict[str, Any], sort: Sequence[SortKey]) -> tuple:
    flat: list[Any] = []
    for i in range(len(sort)):
        flat += [doc.get(f"_m{i}", 1), doc.get(f"_v{i}")]
    return (*flat, doc.get("c", 0), doc["_t"], doc["_id"])


# -- running ------------------------------------------------------------------------------

class Search:
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None,
                 query: SearchQuery, types: Sequence[str], snapshot: int) -> None:
        self.db, self.session, self.query = db, session, query
        self.types, self.snapshot = list(types), snapshot

    async def aggregate(self, stages: list[Stage]) -> list[dict[str, Any]]:
        cursor = await self.db[self.types[0]].aggregate(stages, session=self.session,
                                                        allowDiskUse=True)
        return await cursor.to_list()

    async def total(self, mode: str) -> int | None:
        if mode == "none":
            return None
        stages = matching(self.query, self.types, self.snapshot)
        if mode == "estimate":
            stages.append({"$limit": ESTIMATE_CAP + 1})
        found = await self.aggregate([*stages, {"$count": "n"}])
        n = found[0]["n"] if found else 0
        return None if mode == "estimate" and n > ESTIMATE_CAP else n

    async def rows(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        sort = self.query.sort
        backward = cursor is not None and cursor.backward
        cols = columns(sort, backward)
        stages = [*matching(self.query, self.types, self.snapshot),
                  *sort_stages(sort, self.types, self.query.aliases)]
        if cursor is not None and cursor.position is not None:
            stages.append({"$match": after(cols, cursor.position)})
        projection = {**_ROW_FIELDS, **{f: 1 for f, _ in cols}}
        if self.query.include or self.query.revinclude:
            projection["ix.ref"] = 1
        stages += [{"$sort": {f: -1 if d else 1 for f, d in cols}}, {"$limit": limit},
                   {"$project": projection}]
        return await self.aggregate(stages)

    async def page(self, cursor: Cursor | None
                   ) -> tuple[list[dict[str, Any]], tuple | None, tuple | None]:
        """(documents, position before the page or None, position after it or None)."""
        n, sort = self.query.count, self.query.sort
        if cursor is not None and cursor.backward:
            docs = await self.rows(cursor, n + 1)
            if len(docs) > n:
                docs = docs[:n][::-1]
                return docs, position_of(docs[0], sort), position_of(docs[-1], sort)
            cursor = None  # reached the start: serve the first page, full
        docs = await self.rows(cursor, n + 1)
        more = len(docs) > n
        docs = docs[:n]
        before = position_of(docs[0], sort) if cursor is not None and docs else None
        return docs, before, position_of(docs[-1], sort) if more else None


async def run(db: AsyncDatabase, session: AsyncClientSession | None, query: SearchQuery,
              all_types: TypeLister) -> SearchResult:
    width = 2 * len(query.sort) + 3
    cursor = Cursor.decode(query.cursor, width) if query.cursor else None
    snapshot = cursor.snapshot if cursor else await _current_seq(db, session)
    types = sorted({t for t in (query.types or await all_types()) if schema.is_type_name(t)})
    if not types:
        return SearchResult([], total=0 if query.total != "none" else None)
    search = Search(db, session, query, types, snapshot)
    total = cursor.total if cursor is not None else await search.total(query.total)
    first = Cursor(snapshot, total).encode()
    if query.count <= 0:
        return SearchResult([], total=total, first_cursor=first)
    docs, before, behind = await search.page(cursor)
    result = SearchResult(
        [schema.version_from_current(d["_t"], d) for d in docs], total=total,
        first_cursor=first,
        next_cursor=Cursor(snapshot, total, False, behind).encode() if behind else None,
        prev_cursor=Cursor(snapshot, total, True, before).encode() if before else None,
        has_more=behind is not None)
    if query.include or query.revinclude:
        result.included, result.include_truncated = await includes(db, session, query, docs)
    return result


async def _current_seq(db: AsyncDatabase, session: AsyncClientSession | None) -> int:
    doc = await db[schema.COUNTERS].find_one({"_id": schema.SEQ_COUNTER}, session=session)
    return doc["n"] if doc else 0


# -- includes -----------------------------------------------------------------------------

Row = dict[str, Any]


async def includes(db: AsyncDatabase, session: AsyncClientSession | None,
                   query: SearchQuery, matches: list[Row]) -> tuple[list[ResourceVersion], bool]:
    seen = {(d["_t"], d["_id"]) for d in matches}
    added: list[Row] = []
    frontier, first, truncated = matches, True, False
    while frontier:
        forward = [i for i in query.include if first or i.iterate]
        reverse = [i for i in query.revinclude if first or i.iterate]
        if not forward and not reverse:
            break
        found = await _follow(db, session, frontier, forward, reverse)
        new = sorted((d for k, d in found.items() if k not in seen), key=_creation)
        room = query.max_include - len(added)
        if len(new) > room:
            new, truncated = new[:room], True
        if not new:
            break
        seen.update((d["_t"], d["_id"]) for d in new)
        added.extend(new)
        frontier, first = new, False
    added.sort(key=_creation)
    return [schema.version_from_current(d["_t"], d) for d in added], truncated


def _creation(doc: Row) -> tuple:
    return doc.get("c", 0), doc["_t"], doc["_id"]


async def _follow(db: AsyncDatabase, session: AsyncClientSession | None, frontier: list[Row],
                  forward: Sequence[Include], reverse: Sequence[Include]
                  ) -> dict[tuple[str, str], Row]:
    wanted: dict[str, set[str]] = {}  # type -> ids referenced
    for rule in forward:
        for doc in frontier:
            if doc["_t"] != rule.source:
                continue
            for ref in (doc.get("ix") or {}).get("ref", ()):
                if (ref["p"] in rule.codes and ref.get("u") is None and ref.get("i")
                        and ref.get("t") and (rule.target is None or ref["t"] == rule.target)):
                    wanted.setdefault(ref["t"], set()).add(ref["i"])
    out: dict[tuple[str, str], Row] = {}
    for type, ids in wanted.items():
        await _fetch(db, session, type, {"_id": {"$in": sorted(ids)}}, out)
    for rule in reverse:
        keys = [schema.local_key(code, doc["_t"], doc["_id"]) for doc in frontier
                if rule.target is None or doc["_t"] == rule.target for code in rule.codes]
        if keys:
            await _fetch(db, session, rule.source, {"ix.ref.k": {"$in": keys}}, out)
    return out


async def _fetch(db: AsyncDatabase, session: AsyncClientSession | None, type: str,
                 where: dict[str, Any], out: dict[tuple[str, str], Row]) -> None:
    if not schema.is_type_name(type):
        return
    projection = {**schema.CURRENT_FIELDS, "c": 1, "ix.ref": 1}
    async for doc in db[type].find({**where, "del": False}, projection, session=session):
        doc["_t"] = type
        out[(type, doc["_id"])] = doc
