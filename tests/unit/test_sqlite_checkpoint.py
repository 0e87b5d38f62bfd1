"""SQLite checkpoints off the commit path (fhirpm.storage.sqlite.checkpoint): a commit does
not checkpoint below the WAL bound, the checkpointer thread does after commits, the bound
caps the WAL when the checkpointer is not running, and nothing committed is lost."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from fhirpm.storage.sqlite import SqliteResourceStore
from tests.contract.stores import version

PAGE = 4096


async def write(store: SqliteResourceStore, first: int, count: int) -> None:
    """One unit of work: `count` new resources of ~8 KB each (a few WAL pages apiece)."""
    async with store.unit_of_work() as uow:
        for n in range(first, first + count):
            body = b'{"resourceType":"Basic","id":"b%d","text":"%s"}' % (n, b"x" * 8000)
            await uow.put(version("Basic", f"b{n}", 1, body), [], expected_version=0)


def checkpoint_threads() -> int:
    return sum(t.name == "fhirpm-sqlite-checkpoint" for t in threading.enumerate())


async def test_commits_leave_the_wal_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = SqliteResourceStore(str(path))
    await store.open()
    try:
        bound = await store._write(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone())
        assert bound == (store._wal_bound_pages,)
        checkpointer = store._checkpointer
        assert checkpointer is not None
        checkpointer.stop()  # no checkpointer: commits alone leave the database file as is
        size = path.stat().st_size
        await write(store, 0, 600)  # ~1,800 pages: SQLite's own default would checkpoint
        assert path.stat().st_size == size  # all in the WAL: the commit did not checkpoint
        checkpointer.start()  # running again: the next commit calls for a checkpoint
        await write(store, 600, 1)
        assert checkpointer.wait_passes(1, timeout=30)
        assert path.stat().st_size >= size + 601 * 8000  # folded back into the database
    finally:
        await store.close()
    assert store._checkpointer is None


async def test_the_bound_caps_the_wal_when_no_checkpointer_runs(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = SqliteResourceStore(str(path), wal_bound_pages=50)
    await store.open()
    try:
        assert store._checkpointer is not None
        store._checkpointer.stop()
        for n in range(40):  # ~10 pages each: ~400 pages without the bound
            await write(store, n * 4, 4)
        wal = os.path.getsize(f"{path}-wal")
        assert wal < 3 * 50 * PAGE  # the bound plus the unit that crossed it, not 400 pages
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM resources").fetchone() == (160,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_close_stops_the_thread_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    before = checkpoint_threads()
    store = SqliteResourceStore(str(path))
    await store.open()
    assert checkpoint_threads() == before + 1
    for n in range(10):  # commits poke the checkpointer while it may be copying
        await write(store, n * 5, 5)
    await store.close()
    assert checkpoint_threads() == before
    store = SqliteResourceStore(str(path))
    await store.open()
    try:
        found = await store.read("Basic", "b49")
        assert found is not None and found.body.startswith(b'{"resourceType":"Basic"')
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM resources").fetchone() == (50,)
