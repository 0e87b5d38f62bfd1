"""SQLite fills the audit log's reference index behind the appends (storage/sqlite/audit.py):
a lookup by reference must give the same entries whether they are indexed yet or not, and
the index catches up on its own once enough records were appended."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirpm.audit import chain
from fhirpm.storage.port import AuditDraft, AuditEntry, AuditSpan
from fhirpm.storage.sqlite import audit as audit_sql
from fhirpm.storage.sqlite import schema
from fhirpm.storage.sqlite import store as sqlite_store
from fhirpm.storage.sqlite.store import SqliteResourceStore

PATIENTS = [*(f"Patient/p{n}" for n in range(5)), 'odd "quoted" \\ ref']  # JSON-escaped


def seal(payload: bytes, seq: int, previous: str) -> str:
    return chain.digest(payload, seq, previous)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteResourceStore]:
    opened = SqliteResourceStore(str(tmp_path / "audit.db"))
    await opened.open()
    yield opened
    await opened.close()


def drafts(rng: random.Random, first: int, count: int) -> list[AuditDraft]:
    made = []
    for n in range(first, first + count):
        refs = (*rng.sample(PATIENTS, rng.randint(0, 2)), "Practitioner/x")
        made.append(AuditDraft(f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}.000000Z", refs,
                               f'["e",{n}]'.encode()))
    return made


def expected(everything: list[AuditEntry], span: AuditSpan) -> list[int]:
    """The oracle: the span's entries, chosen from the whole log in Python."""
    chosen = [e.seq for e in everything
              if span.ref in e.refs
              and (span.since is None or e.recorded >= span.since)
              and (span.until is None or e.recorded <= span.until)
              and (span.after is None or e.seq > span.after)
              and (span.before is None or e.seq < span.before)]
    chosen.sort(reverse=span.descending)
    return chosen[:span.limit]


def spans() -> list[AuditSpan]:
    out = []
    for ref in (*PATIENTS, "Practitioner/x", "Patient/nobody"):
        for descending in (False, True):
            out += [AuditSpan(ref=ref, descending=descending, limit=7),
                    AuditSpan(ref=ref, descending=descending, after=20, before=45),
                    AuditSpan(ref=ref, descending=descending,
                              since="2026-01-01T00:00:30.000000Z", limit=1000)]
    return out


async def check_every_span(store: SqliteResourceStore) -> None:
    everything = await store.audit_list(AuditSpan(limit=10_000))
    for span in spans():
        found = [e.seq for e in await store.audit_list(span)]
        assert found == expected(everything, span), span
        unlimited = AuditSpan(ref=span.ref, since=span.since, after=span.after,
                              before=span.before)
        assert await store.audit_count(span) == len(expected(everything, unlimited)), span


async def test_lookups_agree_before_between_and_after_indexing(
        store: SqliteResourceStore) -> None:
    rng = random.Random(7)
    await store.audit_commit(drafts(rng, 0, 30), seal)
    await check_every_span(store)  # nothing indexed: all from the scan past the index
    assert await store.audit_index() == 30
    await store.audit_commit(drafts(rng, 30, 30), seal)
    await check_every_span(store)  # half indexed, half past the index
    assert await store.audit_index() == 30
    assert await store.audit_index() == 0  # nothing left
    await check_every_span(store)


async def test_purge_and_restore_keep_lookups_whole(store: SqliteResourceStore,
                                                     tmp_path: Path) -> None:
    rng = random.Random(11)
    await store.audit_commit(drafts(rng, 0, 40), seal)
    await store.audit_index()
    await store.audit_commit(drafts(rng, 40, 20), seal)
    assert await store.audit_purge(25) == 25
    await check_every_span(store)
    copy = SqliteResourceStore(str(tmp_path / "copy.db"))
    await copy.open()
    try:  # a restored log is indexed as it lands: nothing left for the indexer
        await copy.audit_restore(await store.audit_list(AuditSpan(limit=10_000)))
        assert await copy.audit_index() == 0
        await check_every_span(copy)
    finally:
        await copy.close()


async def test_the_index_catches_up_by_itself(store: SqliteResourceStore,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "_AUDIT_INDEX_BATCH", 10)
    rng = random.Random(3)
    await store.audit_commit(drafts(rng, 0, 6), seal)
    assert store._audit_indexing is None  # below the batch: left for later
    await store.audit_commit(drafts(rng, 6, 6), seal)  # the group indexes all 12 itself
    upkeep = store._audit_indexing  # then the WAL is checkpointed on the writer thread
    assert upkeep is not None
    await upkeep
    assert await store.audit_index() == 0  # nothing was left to index
    async with store.unit_of_work() as unit:  # records appended by a unit count too
        await unit.audit_append(drafts(rng, 12, 10), seal)
    upkeep = store._audit_indexing
    assert upkeep is not None
    assert await upkeep == 10  # indexed on the writer thread
    await check_every_span(store)


async def test_a_log_from_before_the_deferred_index_is_migrated(tmp_path: Path) -> None:
    """A database whose log kept newline-joined refs, indexed with every append."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn)  # today's schema, then the log as the earlier one left it
    conn.execute("DROP TABLE audit_indexed")
    conn.execute(f"PRAGMA user_version = {schema.MIGRATIONS.index(audit_sql.INDEXED_DDL)}")
    old = [(1, "Patient/a\nPractitioner/x"), (2, ""), (3, 'Patient/b\nodd "quoted" \\ one')]
    for seq, refs in old:
        conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)",
                     (seq, f"2026-01-01T00:00:0{seq}.000000Z", refs, b"[]", "p", "h"))
        conn.executemany("INSERT INTO audit_ref VALUES (?, ?)",
                         [(ref, seq) for ref in refs.split("\n") if refs])
    conn.close()
    store = SqliteResourceStore(str(path))
    await store.open()
    try:
        entries = await store.audit_list(AuditSpan())
        assert [e.refs for e in entries] == [("Patient/a", "Practitioner/x"), (),
                                             ("Patient/b", 'odd "quoted" \\ one')]
        assert await store.audit_index() == 0  # all three were indexed before
        for ref, seqs in (("Patient/a", [1]), ('odd "quoted" \\ one', [3]),
                          ("Practitioner/x", [1])):
            assert [e.seq for e in await store.audit_list(AuditSpan(ref=ref))] == seqs
    finally:
        await store.close()


async def test_records_left_unindexed_before_a_restart_count_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "_AUDIT_INDEX_BATCH", 10)
    rng = random.Random(5)
    path = str(tmp_path / "restarted.db")
    for first in (0, 4):  # two short-lived processes, 4 records each: 8 in all, below 10
        store = SqliteResourceStore(path)
        await store.open()
        try:
            await store.audit_commit(drafts(rng, first, 4), seal)
            assert store._audit_indexing is None
        finally:
            await store.close()
    store = SqliteResourceStore(path)
    await store.open()
    try:  # the third knows of the 8 left before it: its own 4 make 12, and it indexes
        await store.audit_commit(drafts(rng, 8, 4), seal)
        upkeep = store._audit_indexing
        assert upkeep is not None
        await upkeep
        assert await store.audit_index() == 0
        await check_every_span(store)
    finally:
        await store.close()
