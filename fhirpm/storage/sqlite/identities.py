"""Identity lookups inside a unit of work: `_id=a,b` and `identifier=s|v` searches (alone or
OR-ed), the searches a conditional write or an HL7 v2 message makes before it writes, all
in one statement.

The general search (`search.py`) pins a snapshot, probes its clauses, then pages with a
keyset cursor: five statements and their planning for a lookup that finds a resource or
two, ~150-650 us each on the writer thread in an HL7 v2 message (~2 ms a message). A unit
of work holds the write lock, so nothing can change between its statements and it pages
nothing: here every lookup of a trip becomes one `UNION` of index probes (the token index
by (param, code) for identifiers, the resources key for ids), joined to the current
versions once. The answers are the general search's (its matches in rid order; only
`total="none"`, unsorted, no includes, no cursor, within `count`): a query of any other
shape, or one that finds more than its `count`, is answered by `search.run`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from fhirpm.search.query import AnyOf, Clause, Param, SearchQuery, SearchResult, TokenPred
from fhirpm.storage.sqlite.clauses import Sql, keys, pred_sql

_COLS = "h.type, h.id, h.version, h.last_updated, h.method, h.body, h.seq"


def run_many(c: sqlite3.Connection, queries: Sequence[SearchQuery]) -> list[SearchResult]:
    """Each query's result, in order: identity lookups together, the others one by one."""
    from fhirpm.storage.sqlite import search

    probes = {n: sql for n, q in enumerate(queries) if (sql := _probes(q)) is not None}
    found = _run(c, probes) if probes else {}
    out = []
    for n, q in enumerate(queries):
        matches = found.get(n)
        if matches is None or len(matches) > q.count:
            out.append(search.run(c, q))
        else:
            out.append(SearchResult(matches))
    return out


def _run(c: sqlite3.Connection, probes: dict[int, Sql]) -> dict[int, list]:
    from fhirpm.storage.sqlite.store import version_from_row

    union = " UNION ".join(f"SELECT {n} AS q, rid FROM ({sql})" for n, (sql, _) in
                           probes.items())
    args = [a for _, params in probes.values() for a in params]
    rows = c.execute(f"SELECT m.q, {_COLS} FROM ({union}) m "
                     "JOIN resources r ON r.rid = m.rid JOIN history h ON h.seq = r.seq "
                     "WHERE r.deleted = 0 ORDER BY m.q, r.rid", args).fetchall()
    out: dict[int, list] = {n: [] for n in probes}
    for row in rows:
        out[row[0]].append(version_from_row(row[1:]))
    return out


def _probes(q: SearchQuery) -> Sql | None:
    """The rids `q` matches as one SELECT, if it is an identity lookup."""
    if (len(q.types) != 1 or len(q.where) != 1 or q.sort or q.include or q.revinclude
            or q.cursor or q.total != "none" or q.count <= 0):
        return None
    clause = q.where[0]
    clauses = clause.clauses if isinstance(clause, AnyOf) else (clause,)
    parts = [_probe(q.types[0], cl) for cl in clauses]
    if any(p is None for p in parts):
        return None
    return (" UNION ALL ".join(sql for sql, _ in parts),  # type: ignore[misc]
            [a for _, args in parts for a in args])  # type: ignore[misc]


def _probe(type: str, clause: Clause) -> Sql | None:
    if not isinstance(clause, Param) or clause.code not in ("_id", "identifier"):
        return None
    if not clause.preds or not all(isinstance(p, TokenPred) and p.code is not None
                                   and not p.no_system for p in clause.preds):
        return None
    preds: list[TokenPred] = list(clause.preds)  # type: ignore[arg-type]
    if clause.code == "_id":
        if any(p.system is not None for p in preds):
            return None
        marks = ",".join("?" * len(preds))
        return (f"SELECT rid FROM resources WHERE type = ? AND id IN ({marks})",
                [type, *(p.code for p in preds)])
    key = keys([type], "identifier")[0]
    probes = [pred_sql(p, "a") for p in preds]  # the token match every search uses
    return (" UNION ALL ".join(f"SELECT rid FROM ix_token a WHERE a.param = ? AND {sql}"
                               for sql, _ in probes),
            [a for _, args in probes for a in (key, *args)])
