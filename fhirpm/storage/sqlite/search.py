"""Compile a SearchQuery into SQL over the index tables and run it.

First cut: type filter, paging and `_lastUpdated`-style ordering by seq; the search issue
replaces this with the full compiler.
"""

from __future__ import annotations

import sqlite3

from fhirpm.search.query import SearchQuery, SearchResult
from fhirpm.storage.port import ResourceVersion


def run(c: sqlite3.Connection, query: SearchQuery) -> SearchResult:
    from fhirpm.storage.sqlite.store import _VERSION_COLUMNS, version_from_row

    if query.where:
        raise NotImplementedError("search parameters are compiled by the search issue")
    where = ["r.deleted = 0"]
    args: list[object] = []
    if query.types:
        where.append(f"r.type IN ({','.join('?' * len(query.types))})")
        args.extend(query.types)
    sql = (f"SELECT {_VERSION_COLUMNS} FROM resources r JOIN history h ON h.seq = r.seq "
           f"WHERE {' AND '.join(where)} ORDER BY r.rid LIMIT ? OFFSET ?")
    rows = c.execute(sql, [*args, query.count + 1, query.offset]).fetchall()
    matches: list[ResourceVersion] = [version_from_row(r) for r in rows[: query.count]]
    total = None
    if query.total != "none":
        total = c.execute(f"SELECT count(*) FROM resources r WHERE {' AND '.join(where)}",
                          args).fetchone()[0]
    return SearchResult(matches=matches, total=total, has_more=len(rows) > query.count)
