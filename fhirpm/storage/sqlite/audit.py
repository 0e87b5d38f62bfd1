"""The audit log on SQLite: one narrow append-only table and one lookup table.

An AuditEvent per read made every read write ~70 B-tree entries when events were ordinary
resources (history, current pointer, ~22 search index rows in tables with 2-3 indexes
each). Here an entry is one row keyed by its seq (appended at the end of the B-tree), its
`recorded` instant in a second, also append-mostly, index, and one `(ref, seq)` row per
reference it names (the patient, the user, the resource read) in a WITHOUT ROWID table:
the lookups "who touched Patient/7" and "what did Practitioner/2 do" are range scans.

The head (seq and hash of the newest entry ever appended) is one row of `audit_head`,
read and moved inside the appending transaction (once per append, not per entry): the
writer holds SQLite's write lock (BEGIN IMMEDIATE), so no other connection or process can
take the same position, and a retention purge of every entry does not lose the chain's end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from fhirpm.storage.port import AUDIT_GENESIS, AuditDraft, AuditEntry, AuditSpan, Sealer

DDL = """
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    recorded TEXT NOT NULL,
    refs TEXT NOT NULL,
    payload BLOB NOT NULL,
    previous TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_recorded ON audit_log (recorded);
CREATE TABLE audit_ref (
    ref TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (ref, seq)
) WITHOUT ROWID;
CREATE TABLE audit_head (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
)
"""

_COLUMNS = "seq, recorded, refs, payload, previous, hash"
_SEP = "\n"  # refs are stored joined: a reference never holds a newline


def head(c: sqlite3.Connection) -> AuditEntry | None:
    row = c.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return _entry(row) if row else None


def get(c: sqlite3.Connection, seq: int) -> AuditEntry | None:
    row = c.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return _entry(row) if row else None


def append(c: sqlite3.Connection, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
    """Inside the caller's transaction: the drafts, sealed after the current head."""
    last = c.execute("SELECT seq, hash FROM audit_head WHERE one = 1").fetchone()
    seq, previous = last if last else (0, AUDIT_GENESIS)
    rows: list[tuple[Any, ...]] = []
    refs: list[tuple[str, int]] = []
    for draft in drafts:
        seq += 1
        hash_ = seal(draft.payload, seq, previous)
        rows.append((seq, draft.recorded, _SEP.join(draft.refs), draft.payload, previous,
                     hash_))
        refs.extend((ref, seq) for ref in dict.fromkeys(draft.refs))
        previous = hash_
    _insert(c, rows, refs)
    _move_head(c, seq, previous)


def restore(c: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    _insert(c, [(e.seq, e.recorded, _SEP.join(e.refs), e.payload, e.previous, e.hash)
                for e in entries],
            [(ref, e.seq) for e in entries for ref in dict.fromkeys(e.refs)])
    if entries:
        last = max(entries, key=lambda e: e.seq)
        known = c.execute("SELECT seq FROM audit_head WHERE one = 1").fetchone()
        if known is None or known[0] < last.seq:
            _move_head(c, last.seq, last.hash)


def _move_head(c: sqlite3.Connection, seq: int, hash_: str) -> None:
    c.execute("INSERT INTO audit_head VALUES (1, ?, ?) ON CONFLICT (one) DO UPDATE SET "
              "seq = excluded.seq, hash = excluded.hash", (seq, hash_))


def _insert(c: sqlite3.Connection, rows: list[tuple[Any, ...]],
            refs: list[tuple[str, int]]) -> None:
    c.executemany("INSERT INTO audit_log VALUES (?,?,?,?,?,?)", rows)
    c.executemany("INSERT INTO audit_ref VALUES (?,?)", refs)


def listing(c: sqlite3.Connection, span: AuditSpan) -> list[AuditEntry]:
    source, where, args, order = _span(span)
    sql = (f"SELECT {', '.join('a.' + col for col in _COLUMNS.split(', '))} FROM {source}"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" ORDER BY {order} {'DESC' if span.descending else 'ASC'} LIMIT ?")
    args.append(span.limit)
    return [_entry(row) for row in c.execute(sql, args)]


def count(c: sqlite3.Connection, span: AuditSpan) -> int:
    source, where, args, _ = _span(span)
    sql = f"SELECT count(*) FROM {source}" + (f" WHERE {' AND '.join(where)}" if where else "")
    return c.execute(sql, args).fetchone()[0]


def _span(span: AuditSpan) -> tuple[str, list[str], list[Any], str]:
    """FROM, WHERE clauses, arguments and the seq column of a span's query."""
    where: list[str] = []
    args: list[Any] = []
    if span.ref is not None:
        source = "audit_ref x JOIN audit_log a ON a.seq = x.seq"
        where.append("x.ref = ?")
        args.append(span.ref)
        order = "x.seq"  # the (ref, seq) key gives this order without sorting
    else:
        source, order = "audit_log a", "a.seq"
    for clause, value in (("a.recorded >= ?", span.since), ("a.recorded <= ?", span.until),
                          (f"{order} > ?", span.after), (f"{order} < ?", span.before)):
        if value is not None:
            where.append(clause)
            args.append(value)
    return source, where, args, order


def purge(c: sqlite3.Connection, upto: int) -> int:
    gone = c.execute("SELECT seq, refs FROM audit_log WHERE seq <= ?", (upto,)).fetchall()
    # by key: audit_ref is ordered by (ref, seq), so deleting by seq alone would scan it
    c.executemany("DELETE FROM audit_ref WHERE ref = ? AND seq = ?",
                  [(ref, seq) for seq, refs in gone if refs for ref in refs.split(_SEP)])
    return c.execute("DELETE FROM audit_log WHERE seq <= ?", (upto,)).rowcount


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    seq, recorded, refs, payload, previous, hash_ = row
    return AuditEntry(seq, recorded, tuple(refs.split(_SEP)) if refs else (), bytes(payload),
                      previous, hash_)
