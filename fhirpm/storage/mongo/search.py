"""Compile a SearchQuery into MongoDB queries over the per-type collections and run it.

First cut, matching the SQLite adapter's: live resources of the named types (all types for
a system search), by type and then creation order, with offset paging and counts. Several types are
read one collection after another (counts decide where the page starts), which also works
inside a transaction, where `$unionWith` is not allowed. The search issue's full AST
(parameters, chains, `_has`, includes, `_sort`) compiles onto the `ix.<kind>` arrays.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhirpm.search.query import SearchQuery, SearchResult
from fhirpm.storage.mongo import schema
from fhirpm.storage.port import ResourceVersion

LIVE = {"del": False}

TypeLister = Callable[[], Awaitable[Sequence[str]]]


async def run(db: AsyncDatabase, session: AsyncClientSession | None, query: SearchQuery,
              all_types: TypeLister) -> SearchResult:
    if query.where:
        raise NotImplementedError("search parameters are compiled by the search issue")
    types = sorted({t for t in (query.types or await all_types()) if schema.is_type_name(t)})
    wanted = max(query.count, 0) + 1  # one more than a page tells whether there is a next
    skip = max(query.offset, 0)
    matches: list[ResourceVersion] = []
    total = 0
    counted = query.total != "none" or len(types) > 1
    for type in types:
        if len(matches) >= wanted and query.total == "none":
            break
        collection = db[type]
        size = await collection.count_documents(LIVE, session=session) if counted else None
        if size is not None:
            total += size
            if skip >= size:
                skip -= size
                continue
        if len(matches) < wanted:
            cursor = collection.find(LIVE, schema.CURRENT_FIELDS, session=session)
            cursor = cursor.sort([("c", 1), ("_id", 1)]).skip(skip)
            docs = await cursor.limit(wanted - len(matches)).to_list()
            matches.extend(schema.version_from_current(type, d) for d in docs)
            skip = 0
    return SearchResult(matches=matches[: max(query.count, 0)],
                        total=total if query.total != "none" else None,
                        has_more=len(matches) > query.count)
