"""Run a SearchQuery against SQLite: plan, page, count and include.

## Plan

Each clause compiles (see `clauses.py`) to a rid set driven by an index and to a per-row
test. The planner drives from one clause and tests the others on each candidate:

- one equality clause whose index is ordered by rid (a token code, a typed reference, an
  exact string, a uri, ...) and no `_sort`: *stream* it in rid order and stop after the
  page, whatever the number of matches;
- otherwise probe each drivable clause (count, capped at PROBE_CAP) and *materialise* the
  smallest set when it is under the cap;
- otherwise *walk* the type's live resources in rid order (index `resources_live`) and test
  every clause per row: broad clauses then fill a page after a few rows.

No plan scans a table: the walk reads the type's own index range.

## Paging: keyset cursors over a pinned snapshot

A page ends at a position (its last row's sort values and rid); the next page starts
strictly after it (`previous` strictly before it, read in reverse), so a write between two
pages can never shift, repeat or skip an unchanged resource the way OFFSET does. The first
page pins a snapshot: the highest rid and the highest change-log seq at that moment (rids
are allocated in commit order by the single writer; a resource keeps its rid for life).
Later pages only return resources that were live at the snapshot: rid <= the pinned rid,
and either unchanged since (seq <= the pinned seq) or with a live version at the pinned
seq (an index lookup in history, only for the few rows changed since). So resources
created (or re-created) after the first page never appear and the total stays true;
resources updated meanwhile are matched on their current version and, if their sort
values did not change, appear exactly once; deleted ones drop out. The total is computed
once, on the first page, and carried by the cursor. A cursor is opaque base64url JSON:
[rid, seq, total, backward, position].

## Counting

Index rows exist only for live resources and carry the type in their parameter key, so a
single-clause count is an index-only `count(DISTINCT rid)`. `_total=estimate` (the
default) counts at most ESTIMATE_CAP matches, a few milliseconds whatever the plan, and
reports no total beyond: a broad search's first page stays fast; `_total=accurate` counts
everything (about 0.2 s per million index entries here).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson

from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.search import cursor_token
from fhirpm.search.query import (
    Clause,
    IdentifierPred,
    Include,
    Param,
    RefPred,
    SearchQuery,
    SearchResult,
    StringPred,
    TokenPred,
    UriPred,
)
from fhirpm.storage.port import ResourceVersion
from fhirpm.storage.sqlite.clauses import (
    TABLE,
    Compiler,
    Row,
    Sql,
    keys,
    pred_sql,
    sort_expr,
)

PROBE_CAP = 2000
ESTIMATE_CAP = 2000
_COLS = "h.type, h.id, h.version, h.last_updated, h.method, h.body, h.seq, r.rid"
_ALL_TYPES = tuple(sorted(RESOURCE_TYPES))


# -- cursors ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    rid: int  # the snapshot: highest rid ...
    seq: int  # ... and highest change-log seq when the first page was read
    total: int | None = None
    backward: bool = False
    position: tuple | None = None  # (missing flag, value) per sort key, then rid

    def encode(self) -> str:
        return cursor_token.pack([self.rid, self.seq, self.total, self.backward,
                                  list(self.position) if self.position is not None else None])

    @classmethod
    def decode(cls, token: str, width: int) -> Cursor:
        rid, seq, total, backward, position = cursor_token.unpack(token, 5)
        ok = (isinstance(rid, int) and isinstance(seq, int)
              and (total is None or isinstance(total, int))
              and isinstance(backward, bool)
              and (position is None or (isinstance(position, list)
                                        and len(position) == width
                                        and isinstance(position[-1], int))))
        if not ok:
            raise cursor_token.refused()
        return cls(rid, seq, total, backward, tuple(position) if position else None)


# -- planning -----------------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    mode: str  # stream | materialise | walk
    source: str  # FROM clause
    filters: Sql  # WHERE conditions (without keyset)
    rid_col: str  # the column pages are keyed on
    group: bool  # GROUP BY rid_col (a streamed index may hold a resource twice)
    count_sql: Sql | None = None  # an index-only count, when the plan allows one
    known_total: int | None = None  # counted while planning (materialised matches)


def _streamable(clause: Clause, types: Sequence[str]) -> bool:
    """An equality whose index lists matching rows in rid order (see index.py)."""
    if len(types) != 1 or not isinstance(clause, Param) or clause.code == "_id":
        return False
    if len(clause.preds) != 1:
        return False
    match clause.preds[0]:
        case TokenPred(code=str()) | TokenPred(code=None, system=str()):
            return True
        case RefPred(id=str(), type=str()) | RefPred(id=None, url=str()):
            return True
        case StringPred(mode="exact") | UriPred(mode="eq"):
            return True
        case IdentifierPred(token=TokenPred(code=str(), system=str())):
            return True
    return False


class Planner:
    def __init__(self, c: sqlite3.Connection, query: SearchQuery, snapshot: Cursor,
                 pinned: bool) -> None:
        self.c = c
        self.query = query
        self.types = list(query.types) or list(_ALL_TYPES)
        self.snapshot = snapshot
        self.pinned = pinned  # a later page: resources must have been live at the snapshot
        self.comp = Compiler(query.aliases)
        self.row = Row("r.rid", "r.id", "r.type")

    def plan(self) -> Plan:
        where = self.query.where
        candidates = [(i, sql) for i, cl in enumerate(where)
                      if (sql := self.comp.rids(cl, self.types)) is not None]
        sortless = not self.query.sort
        streams = [i for i, _ in candidates if sortless and _streamable(where[i], self.types)]
        if len(candidates) == 1 and streams:
            return self._stream(streams[0])
        if candidates:
            sizes = [self._probe(sql) for _, sql in candidates]
            best = min(range(len(candidates)), key=sizes.__getitem__)
            if sizes[best] < PROBE_CAP:
                return self._materialise(*candidates[best])
            if streams:
                return self._stream(streams[0])
        return self._walk()

    def _probe(self, rids: Sql) -> int:
        sql = f"SELECT count(*) FROM (SELECT 1 FROM ({rids[0]}) LIMIT {PROBE_CAP})"
        return self.c.execute(sql, rids[1]).fetchone()[0]

    def _tests(self, skip: int | None) -> Sql:
        parts = [self.comp.test(cl, self.types, self.row)
                 for i, cl in enumerate(self.query.where) if i != skip]
        return (" AND ".join(f"({s})" for s, _ in parts) or "1",
                [a for _, args in parts for a in args])

    def _live(self) -> Sql:
        """Live resources of the query's types in the snapshot."""
        types = list(self.query.types)  # none: every type, in rid order without a filter
        type_sql = ("1" if not types else "r.type = ?" if len(types) == 1
                    else f"r.type IN ({','.join('?' * len(types))})")
        then = self._then()
        return (f"{type_sql} AND r.deleted = 0 AND r.rid <= ? AND {then[0]}",
                [*types, self.snapshot.rid, *then[1]])

    def _then(self) -> Sql:
        """Live at the snapshot (see the module docstring); always true on a first page."""
        if not self.pinned:
            return "1", []
        return ("(r.seq <= ? OR coalesce((SELECT h2.method FROM history h2 WHERE "
                "h2.type = r.type AND h2.id = r.id AND h2.seq <= ? ORDER BY h2.version DESC "
                "LIMIT 1), 'DELETE') != 'DELETE')", [self.snapshot.seq, self.snapshot.seq])

    def _stream(self, index: int) -> Plan:
        clause = self.query.where[index]
        assert isinstance(clause, Param)
        pred = pred_sql(clause.preds[0], "a0")
        key = keys(self.types, clause.code, self.comp.aliases)[0]
        tests = self._tests(index)
        driver = (f"a0.param = ? AND ({pred[0]}) AND a0.rid <= ?",
                  [key, *pred[1], self.snapshot.rid])
        then = self._then()
        table = TABLE[clause.type]
        count = None
        if len(self.query.where) == 1:
            count = (f"SELECT DISTINCT a0.rid FROM {table} a0 WHERE {driver[0]}", driver[1])
        return Plan("stream", f"{table} a0 CROSS JOIN resources r ON r.rid = a0.rid",
                    (f"{driver[0]} AND {then[0]} AND {tests[0]}",
                     driver[1] + then[1] + tests[1]), "a0.rid", True, count)

    def _materialise(self, index: int, rids: Sql) -> Plan:
        """Every match of a small driver, found once (each clause tested once per driver
        row, on the index tables alone); the page and the total both come from the list."""
        row = Row("d.rid")
        tests = [self.comp.test(cl, self.types, row)
                 for i, cl in enumerate(self.query.where) if i != index]
        cond = " AND ".join(f"({sql})" for sql, _ in tests) or "1"
        args = [a for _, targs in tests for a in targs]
        if self.pinned:  # only what was live at the snapshot (needs the resource row)
            then = self._then()
            cond += (f" AND d.rid <= ? AND EXISTS (SELECT 1 FROM resources r WHERE "
                     f"r.rid = d.rid AND r.deleted = 0 AND {then[0]})")
            args += [self.snapshot.rid, *then[1]]
        found = [r[0] for r in self.c.execute(
            f"SELECT DISTINCT d.rid FROM ({rids[0]}) d WHERE {cond}", [*rids[1], *args])]
        return Plan("materialise", "resources r",
                    ("r.rid IN (SELECT value FROM json_each(?))", [orjson.dumps(found).decode()]),
                    "r.rid", False, known_total=len(found))

    def _walk(self) -> Plan:
        live, tests = self._live(), self._tests(None)
        count = None
        if not self.query.where:
            count = (f"SELECT r.rid FROM resources r WHERE {live[0]}", live[1])
        return Plan("walk", "resources r", (f"{live[0]} AND {tests[0]}", live[1] + tests[1]),
                    "r.rid", False, count)


# -- running ------------------------------------------------------------------------------


def run(c: sqlite3.Connection, query: SearchQuery) -> SearchResult:
    from fhirpm.storage.sqlite.store import version_from_row

    width = 2 * len(query.sort) + 1
    cursor = Cursor.decode(query.cursor, width) if query.cursor else None
    snapshot = cursor or _snapshot(c)
    planner = Planner(c, query, snapshot, pinned=cursor is not None)
    plan = planner.plan()
    total = cursor.total if cursor is not None else _total(c, plan, query.total)
    first = Cursor(snapshot.rid, snapshot.seq, total)
    if query.count <= 0:
        return SearchResult([], total=total, first_cursor=first.encode())
    rows, prev_pos, next_pos = _page(c, planner, plan, cursor)
    matches = [version_from_row(r[:7]) for r in rows]
    result = SearchResult(
        matches, total=total, first_cursor=first.encode(),
        next_cursor=_at(first, False, next_pos), prev_cursor=_at(first, True, prev_pos),
        has_more=next_pos is not None)
    if query.include or query.revinclude:
        found = [(r[7], v.type, v.id) for r, v in zip(rows, matches, strict=True)]
        result.included, result.include_truncated = _includes(c, query, found)
    return result


def _snapshot(c: sqlite3.Connection) -> Cursor:
    (rid,) = c.execute("SELECT coalesce(max(rid), 0) FROM resources").fetchone()
    (seq,) = c.execute("SELECT coalesce(max(seq), 0) FROM history").fetchone()
    return Cursor(rid, seq)


def _at(first: Cursor, backward: bool, position: tuple | None) -> str | None:
    if position is None:
        return None
    return Cursor(first.rid, first.seq, first.total, backward, position).encode()


def explain(c: sqlite3.Connection, query: SearchQuery, *, pinned: bool = False) -> list[str]:
    """EXPLAIN QUERY PLAN of every statement a search runs (a later page's when `pinned`):
    the statements are recorded while the search runs, then explained."""
    ran: list[str] = []
    c.set_trace_callback(ran.append)
    try:
        first = run(c, replace(query, cursor=None))
        if pinned:
            ran.clear()
            run(c, replace(query, cursor=first.first_cursor))
    finally:
        c.set_trace_callback(None)
    return [row[3] for sql in ran if sql.lstrip().upper().startswith(("SELECT", "WITH"))
            for row in c.execute("EXPLAIN QUERY PLAN " + sql)]


def _total(c: sqlite3.Connection, plan: Plan, mode: str) -> int | None:
    if mode == "none":
        return None
    if plan.known_total is not None:
        return plan.known_total
    if mode == "estimate" and plan.count_sql is None:
        return None  # counting would test row after row: not an estimate's price
    if plan.count_sql is not None:
        inner, args = plan.count_sql
    else:
        inner, args = (f"SELECT DISTINCT {plan.rid_col} FROM {plan.source} "
                       f"WHERE {plan.filters[0]}", plan.filters[1])
    if mode == "estimate":
        inner = f"{inner} LIMIT {ESTIMATE_CAP + 1}"
    (n,) = c.execute(f"SELECT count(*) FROM ({inner})", args).fetchone()
    return None if mode == "estimate" and n > ESTIMATE_CAP else n


def _page(c: sqlite3.Connection, planner: Planner, plan: Plan,
          cursor: Cursor | None) -> tuple[list[tuple], tuple | None, tuple | None]:
    """(rows, position before the page or None, position after the page or None)."""
    n = planner.query.count
    width = 2 * len(planner.query.sort)
    if cursor is not None and cursor.backward:
        rows = c.execute(*_page_sql(planner, plan, cursor, n + 1)).fetchall()
        if len(rows) > n:
            rows = rows[:n][::-1]
            return rows, _position(rows[0], width), _position(rows[-1], width)
        cursor = None  # reached the start: serve the first page, full
    rows = c.execute(*_page_sql(planner, plan, cursor, n + 1)).fetchall()
    more = len(rows) > n
    rows = rows[:n]
    before = _position(rows[0], width) if cursor is not None and rows else None
    after = _position(rows[-1], width) if more else None
    return rows, before, after


def _position(row: tuple, width: int) -> tuple:
    sort_values = row[8:8 + width // 2]
    flat: list[object] = []
    for v in sort_values:
        flat.extend((1, 0) if v is None else (0, v))
    return (*flat, row[7])


def _page_sql(planner: Planner, plan: Plan, cursor: Cursor | None, limit: int) -> Sql:
    backward = cursor is not None and cursor.backward
    sort = planner.query.sort
    if not sort:
        keyset: Sql = ("1", [])
        if cursor is not None and cursor.position is not None:
            keyset = (f"{plan.rid_col} {'<' if backward else '>'} ?", [cursor.position[-1]])
        group = f" GROUP BY {plan.rid_col}" if plan.group else ""
        return (f"SELECT {_COLS} FROM {plan.source} JOIN history h ON h.seq = r.seq "
                f"WHERE {plan.filters[0]} AND {keyset[0]}{group} ORDER BY {plan.rid_col} "
                f"{'DESC' if backward else 'ASC'} LIMIT {limit}",
                plan.filters[1] + keyset[1])
    # The sort keys of every match are computed once into a small materialised table
    # (rid, seq, keys); the page is cut from it, and only the page's rows read history.
    exprs = [sort_expr(k, planner.types, "r.rid", "r.id", planner.comp.aliases) for k in sort]
    key_cols = ", ".join(f"{s} AS k{i}" for i, (s, _) in enumerate(exprs))
    names = ", ".join(f"p.k{i}" for i in range(len(sort)))
    keyed = (f"SELECT r.rid AS rid, r.seq AS seq, {key_cols} FROM {plan.source} "
             f"WHERE {plan.filters[0]}")
    keyed_args = [a for _, args in exprs for a in args] + plan.filters[1]
    # (missing flag asc, value in the key's direction) per key, then rid ascending
    columns: list[tuple[str, bool]] = []
    for i, k in enumerate(sort):
        columns += [(f"({{t}}.k{i} IS NULL)", False),
                    (f"coalesce({{t}}.k{i}, 0)", k.descending)]
    columns.append(("{t}.rid", False))
    if backward:
        columns = [(col, not desc) for col, desc in columns]
    on_q = [(col.format(t="q"), desc) for col, desc in columns]
    keyset = _after(on_q, cursor.position) if cursor and cursor.position else ("1", [])

    def order(t: str) -> str:
        return ", ".join(f"{col.format(t=t)} {'DESC' if desc else 'ASC'}"
                         for col, desc in columns)
    return (f"WITH q AS MATERIALIZED ({keyed}) SELECT {_COLS.replace('r.rid', 'p.rid')}, "
            f"{names} FROM (SELECT * FROM q WHERE {keyset[0]} ORDER BY {order('q')} "
            f"LIMIT {limit}) p JOIN history h ON h.seq = p.seq ORDER BY {order('p')}",
            keyed_args + keyset[1])


def _after(columns: list[tuple[str, bool]], position: Sequence[object]) -> Sql:
    """Rows strictly after `position` in the lexicographic order of `columns`."""
    ors: list[str] = []
    args: list[object] = []
    for i, (col, desc) in enumerate(columns):
        eqs = [f"{c} = ?" for c, _ in columns[:i]]
        ors.append(" AND ".join([*eqs, f"{col} {'<' if desc else '>'} ?"]))
        args.extend([*position[:i], position[i]])
    return " OR ".join(f"({o})" for o in ors), args


# -- includes -----------------------------------------------------------------------------


def _includes(c: sqlite3.Connection, query: SearchQuery,
              matches: list[tuple[int, str, str]]) -> tuple[list[ResourceVersion], bool]:
    from fhirpm.storage.sqlite.store import version_from_row

    seen = {rid for rid, _, _ in matches}
    added: list[int] = []
    frontier = matches
    first, truncated = True, False
    while frontier:
        fwd = [i for i in query.include if first or i.iterate]
        rev = [i for i in query.revinclude if first or i.iterate]
        if not fwd and not rev:
            break
        new = sorted(_follow(c, frontier, fwd, rev) - seen)
        room = query.max_include - len(added)
        if len(new) > room:
            new, truncated = new[:room], True
        if not new:
            break
        seen.update(new)
        added.extend(new)
        frontier = _identities(c, new)
        first = False
    if not added:
        return [], truncated
    rows = c.execute(f"SELECT {_COLS} FROM resources r JOIN history h ON h.seq = r.seq "
                     f"WHERE r.rid IN ({','.join('?' * len(added))}) ORDER BY r.rid",
                     added).fetchall()
    return [version_from_row(r[:7]) for r in rows], truncated


def _identities(c: sqlite3.Connection, rids: list[int]) -> list[tuple[int, str, str]]:
    rows = c.execute(f"SELECT rid, type, id FROM resources WHERE rid IN "
                     f"({','.join('?' * len(rids))})", rids).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _follow(c: sqlite3.Connection, frontier: list[tuple[int, str, str]],
            fwd: Sequence[Include], rev: Sequence[Include]) -> set[int]:
    out: set[int] = set()
    for rule in fwd:
        rids = [rid for rid, type_, _ in frontier if type_ == rule.source]
        if not rids or not rule.codes:
            continue
        k = keys([rule.source], "")  # "Type." prefix
        params = [k[0] + code for code in rule.codes]
        sql = (f"SELECT DISTINCT t.rid FROM ix_reference a INDEXED BY ix_reference_rid "
               f"CROSS JOIN resources t ON t.type = a.ref_type AND t.id = a.ref_id WHERE a.rid IN "
               f"({','.join('?' * len(rids))}) AND a.param IN ({','.join('?' * len(params))}) "
               "AND +a.url IS NULL AND t.deleted = 0")
        args: list[object] = [*rids, *params]
        if rule.target is not None:
            sql += " AND a.ref_type = ?"
            args.append(rule.target)
        out.update(r[0] for r in c.execute(sql, args))
    for rule in rev:
        params = [f"{rule.source}.{code}" for code in rule.codes]
        by_type: dict[str, list[str]] = {}
        for _, type_, id_ in frontier:
            if rule.target is None or type_ == rule.target:
                by_type.setdefault(type_, []).append(id_)
        for type_, ids in by_type.items():
            if not params:
                continue
            sql = (f"SELECT DISTINCT a.rid FROM ix_reference a WHERE a.param IN "
                   f"({','.join('?' * len(params))}) AND a.ref_id IN "
                   f"({','.join('?' * len(ids))}) AND a.ref_type = ? AND +a.url IS NULL")
            out.update(r[0] for r in c.execute(sql, [*params, *ids, type_]))
    return out
