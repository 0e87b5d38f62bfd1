"""The audit log on SQLite: one narrow append-only table and one lookup table.

An AuditEvent per read made every read write ~70 B-tree entries when events were ordinary
resources (history, current pointer, ~22 search index rows in tables with 2-3 indexes
each). Here an entry is one row keyed by its seq (appended at the end of the B-tree) with
its `recorded` instant in a second, also append-mostly, index. The lookups "who touched
Patient/7" and "what did Practitioner/2 do" are range scans of `audit_ref`, one `(ref,
seq)` row per reference an entry names (the patient, the user, the resource read), in a
WITHOUT ROWID table.

`audit_ref` is filled behind the appends, in bulk (`index_pending`), not by them: its
rows land all over its B-tree (one leaf per patient), so writing them with each group of
reads wrote ~3 scattered pages per record, more than the records themselves (~40 vs ~18
us per record on this machine). Sorted and thousands at a time, neighbours share pages,
and SQLite splits each entry's `refs` (a JSON array) itself: ~4 us per record, half of
doing it in Python. `audit_indexed.upto` says how far the index reaches; a lookup by
reference reads it up to there and scans the few entries after it (`listing`, `count`),
so nothing is missed.

The head (seq and hash of the newest entry ever appended) is the log's last entry, or
the `audit_head` row when that is newer: a purge stores the head there before it deletes,
so purging every entry does not lose the chain's end. An append reads the head inside its
transaction (once per append, not per entry) and does not write `audit_head` (a page less
per group of reads): the writer holds SQLite's write lock (BEGIN IMMEDIATE), so no other
connection or process can take the same position.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

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

# migration: audit_ref filled behind the appends (every existing entry is indexed
# already), and `refs` a JSON array (it was newline-joined) for SQLite to split
INDEXED_DDL = """
CREATE TABLE audit_indexed (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    upto INTEGER NOT NULL
);
INSERT INTO audit_indexed SELECT 1, coalesce(max(seq), 0) FROM audit_log;
UPDATE audit_log SET refs = CASE WHEN refs = '' THEN '[]' ELSE
    '["' || replace(replace(replace(refs, '\\', '\\\\'), '"', '\\"'), char(10), '","')
    || '"]' END
"""

_COLUMNS = "seq, recorded, refs, payload, previous, hash"


def _refs_text(refs: Sequence[str]) -> str:
    return orjson.dumps(list(dict.fromkeys(refs))).decode()


def head(c: sqlite3.Connection) -> AuditEntry | None:
    row = c.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return _entry(row) if row else None


def get(c: sqlite3.Connection, seq: int) -> AuditEntry | None:
    row = c.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return _entry(row) if row else None


def append(c: sqlite3.Connection, drafts: Sequence[AuditDraft], seal: Sealer) -> None:
    """Inside the caller's transaction: the drafts, sealed after the current head."""
    last = c.execute(_HEAD).fetchone()
    seq, previous = last if last else (0, AUDIT_GENESIS)
    rows: list[tuple[Any, ...]] = []
    for draft in drafts:
        seq += 1
        hash_ = seal(draft.payload, seq, previous)
        # drafts name each reference once (record.py), so no de-duplication here
        rows.append((seq, draft.recorded, orjson.dumps(draft.refs).decode(), draft.payload,
                     previous, hash_))
        previous = hash_
    insert_rows(c, rows)


def insert_rows(c: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows into `audit_log`, up to 64 per statement. Each statement releases Python's
    lock once while SQLite works: one `executemany` step per row made a thread sealing a
    journal's thousand records take the lock back from the event loop a thousand times,
    each wait up to a switch interval (docs/performance.md)."""
    start = 0
    for size in _CHUNKS:
        while len(rows) - start >= size:
            c.execute(_INSERTS[size], [v for row in rows[start:start + size] for v in row])
            start += size


_CHUNKS = (64, 16, 4, 1)
_INSERTS = {n: "INSERT INTO audit_log VALUES " + ",".join(["(?,?,?,?,?,?)"] * n)
            for n in _CHUNKS}


_HEAD = ("SELECT * FROM (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1) "
         "UNION ALL SELECT seq, hash FROM audit_head ORDER BY 1 DESC LIMIT 1")


def index_pending(c: sqlite3.Connection, limit: int) -> int:
    """Inside the caller's write transaction: put up to `limit` entries past the indexed
    ones into `audit_ref`, sorted; returns how many entries it indexed (0: none left)."""
    upto = _indexed_upto(c)
    last, count = c.execute("SELECT max(seq), count(*) FROM (SELECT seq FROM audit_log "
                            "WHERE seq > ? ORDER BY seq LIMIT ?)", (upto, limit)).fetchone()
    if not count:
        return 0
    # OR IGNORE: a row already there (none is expected) must never fail a group of reads
    c.execute("INSERT OR IGNORE INTO audit_ref SELECT j.value, a.seq "
              "FROM audit_log a, json_each(a.refs) j WHERE a.seq > ? AND a.seq <= ? "
              "ORDER BY 1, 2", (upto, last))
    c.execute("UPDATE audit_indexed SET upto = ? WHERE one = 1", (last,))
    return count


def unindexed(c: sqlite3.Connection) -> int:
    """How many entries lie past the reference index (a bound: purged seqs count too)."""
    (last,) = c.execute("SELECT coalesce(max(seq), 0) FROM audit_log").fetchone()
    return max(0, last - _indexed_upto(c))


def _indexed_upto(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT upto FROM audit_indexed WHERE one = 1").fetchone()
    return row[0] if row else 0


def restore(c: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    insert_rows(c, [(e.seq, e.recorded, _refs_text(e.refs), e.payload, e.previous, e.hash)
                    for e in entries])
    # indexed now, those before `audit_indexed.upto` directly and the log past it in bulk:
    # left unindexed, a copied log would be scanned by every lookup until 2,000 new
    # records started the indexer
    upto = _indexed_upto(c)
    c.executemany("INSERT OR IGNORE INTO audit_ref VALUES (?,?)",
                  [(ref, e.seq) for e in entries if e.seq <= upto
                   for ref in dict.fromkeys(e.refs)])
    while index_pending(c, 50_000):
        pass
    if entries:
        last = max(entries, key=lambda e: e.seq)
        known = c.execute("SELECT seq FROM audit_head WHERE one = 1").fetchone()
        if known is None or known[0] < last.seq:
            _move_head(c, last.seq, last.hash)


def _move_head(c: sqlite3.Connection, seq: int, hash_: str) -> None:
    c.execute("INSERT INTO audit_head VALUES (1, ?, ?) ON CONFLICT (one) DO UPDATE SET "
              "seq = excluded.seq, hash = excluded.hash", (seq, hash_))


def listing(c: sqlite3.Connection, span: AuditSpan) -> list[AuditEntry]:
    """Call inside one read transaction (the index and the scan past it must agree)."""
    rows: list[tuple[Any, ...]] = []
    for part in _parts(c, span):
        source, where, args, order = part
        sql = (f"SELECT {', '.join('a.' + col for col in _COLUMNS.split(', '))} "
               f"FROM {source} WHERE {' AND '.join(where)} "
               f"ORDER BY {order} {'DESC' if span.descending else 'ASC'} LIMIT ?")
        rows.extend(c.execute(sql, [*args, span.limit]))
    rows.sort(key=lambda row: row[0], reverse=span.descending)
    return [_entry(row) for row in rows[:span.limit]]


def count(c: sqlite3.Connection, span: AuditSpan) -> int:
    """Call inside one read transaction, as `listing`."""
    total = 0
    for source, where, args, _ in _parts(c, span):
        sql = f"SELECT count(*) FROM {source} WHERE {' AND '.join(where)}"
        total += c.execute(sql, args).fetchone()[0]
    return total


_Part = tuple[str, list[str], list[Any], str]


def _parts(c: sqlite3.Connection, span: AuditSpan) -> list[_Part]:
    """The queries whose rows make up a span: for a reference, `audit_ref` up to where it
    reaches and a scan of the entries after that (their joined `refs`)."""
    if span.ref is None:
        return [_span(span, "audit_log a", ["1"], [], "a.seq")]
    upto = _indexed_upto(c)
    indexed = _span(span, "audit_ref x JOIN audit_log a ON a.seq = x.seq",
                    ["x.ref = ?", "x.seq <= ?"], [span.ref, upto],
                    "x.seq")  # the (ref, seq) key gives this order without sorting
    pending = _span(span, "audit_log a",
                    ["a.seq > ?", "instr(a.refs, ?) > 0"],  # a JSON string in an array
                    [upto, orjson.dumps(span.ref).decode()], "a.seq")
    return [indexed, pending]


def _span(span: AuditSpan, source: str, where: list[str], args: list[Any],
          order: str) -> _Part:
    """FROM, WHERE clauses, arguments and the seq column of one of a span's queries."""
    for clause, value in (("a.recorded >= ?", span.since), ("a.recorded <= ?", span.until),
                          (f"{order} > ?", span.after), (f"{order} < ?", span.before)):
        if value is not None:
            where.append(clause)
            args.append(value)
    return source, where, args, order


def purge(c: sqlite3.Connection, upto: int) -> int:
    last = c.execute(_HEAD).fetchone()
    if last is not None:
        _move_head(c, *last)  # the chain's end, whatever goes
    gone = c.execute("SELECT seq, refs FROM audit_log WHERE seq <= ?", (upto,)).fetchall()
    # by key: audit_ref is ordered by (ref, seq), so deleting by seq alone would scan it
    c.executemany("DELETE FROM audit_ref WHERE ref = ? AND seq = ?",
                  [(ref, seq) for seq, refs in gone for ref in orjson.loads(refs)])
    return c.execute("DELETE FROM audit_log WHERE seq <= ?", (upto,)).rowcount


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    seq, recorded, refs, payload, previous, hash_ = row
    return AuditEntry(seq, recorded, tuple(orjson.loads(refs)), bytes(payload), previous,
                      hash_)
