"""Change-feed consumers: ordered, at-least-once, resumable after a crash (fhirpm.changes)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from fhirpm.changes import ChangeFeed
from fhirpm.storage.port import ResourceVersion
from fhirpm.storage.sqlite import SqliteResourceStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteResourceStore]:
    s = SqliteResourceStore(str(tmp_path / "feed.db"))
    await s.open()
    yield s
    await s.close()


async def write(store: SqliteResourceStore, *ids: str) -> None:
    """Commit one version of Basic/<id> per id, all in one unit of work."""
    async with store.unit_of_work() as uow:
        for rid in ids:
            body = b'{"resourceType":"Basic","id":"%s"}' % rid.encode()
            await uow.put(ResourceVersion("Basic", rid, 1, "2024-01-01T00:00:00.000000Z",
                                          "POST", body), [], expected_version=0)


class Recorder:
    """A handler that remembers what it saw and can fail on demand."""

    def __init__(self, fail_times: int = 0) -> None:
        self.seen: list[int] = []
        self.calls = 0
        self.fail_times = fail_times
        self.arrived = asyncio.Event()

    async def __call__(self, batch: Sequence[ResourceVersion]) -> None:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise RuntimeError("handler failure")
        self.seen.extend(v.seq for v in batch)
        self.arrived.set()


async def all_seqs(store: SqliteResourceStore) -> list[int]:
    return [v.seq for v in await store.changes(0, 10_000)]


async def test_catch_up_delivers_in_commit_order_and_moves_the_cursor(
        store: SqliteResourceStore) -> None:
    await write(store, "a", "b", "c")
    await write(store, "d")
    feed = ChangeFeed(store)
    seen = Recorder()
    assert await feed.catch_up("audit", seen, batch=2) == 4
    assert seen.seen == await all_seqs(store)
    assert seen.calls == 2  # batches of 2
    assert await store.get_cursor("audit") == seen.seen[-1]
    assert await feed.catch_up("audit", seen) == 0
    # consumers are independent: a new one starts from the beginning
    other = Recorder()
    assert await feed.catch_up("hl7-out", other) == 4


async def test_a_failing_handler_leaves_the_cursor_and_gets_the_same_batch_again(
        store: SqliteResourceStore) -> None:
    await write(store, "a", "b")
    feed = ChangeFeed(store)
    handler = Recorder(fail_times=1)
    with pytest.raises(RuntimeError):
        await feed.deliver_once("subs", handler)
    assert await store.get_cursor("subs") == 0
    assert await feed.deliver_once("subs", handler) == 2
    assert handler.seen == await all_seqs(store)


async def test_follow_retries_a_failing_handler_without_skipping(
        store: SqliteResourceStore) -> None:
    await write(store, "a", "b", "c")
    feed = ChangeFeed(store, poll_interval=60, retry_delay=0.01)
    handler = Recorder(fail_times=2)
    task = asyncio.create_task(feed.follow("reminders", handler))
    await asyncio.wait_for(handler.arrived.wait(), timeout=10)
    await feed.stop()
    await asyncio.wait_for(task, timeout=10)
    assert handler.calls == 3
    assert handler.seen == await all_seqs(store)


class DrainSignallingStore(SqliteResourceStore):
    """The real store, announcing when a reader found nothing new (the follower is idle)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.drained = asyncio.Event()

    async def changes(self, after_seq: int, limit: int) -> list[ResourceVersion]:
        found = await super().changes(after_seq, limit)
        if not found:
            self.drained.set()
        return found


async def test_follow_wakes_on_an_in_process_commit_not_the_poll(tmp_path: Path) -> None:
    store = DrainSignallingStore(str(tmp_path / "spy.db"))
    await store.open()
    try:
        # a poll interval far beyond the timeout: only the commit notification can wake it
        feed = ChangeFeed(store, poll_interval=3600)
        handler = Recorder()
        task = asyncio.create_task(feed.follow("audit", handler))
        await asyncio.wait_for(store.drained.wait(), timeout=10)  # idle, before the write
        await write(store, "x")
        await asyncio.wait_for(handler.arrived.wait(), timeout=10)
        assert handler.seen == await all_seqs(store)
        await feed.stop()
        await asyncio.wait_for(task, timeout=10)  # stop() ends a follower waiting on the poll
    finally:
        await store.close()


async def test_follow_sees_another_process_writes_by_polling(
        store: SqliteResourceStore) -> None:
    other = SqliteResourceStore(store.path)  # a second process's view: no shared listener
    await other.open()
    try:
        feed = ChangeFeed(store, poll_interval=0.02)
        handler = Recorder()
        feed.subscribe("audit", handler)
        await feed.start()
        await write(other, "remote")
        await asyncio.wait_for(handler.arrived.wait(), timeout=10)
        await feed.stop()
        assert handler.seen == await all_seqs(store)
    finally:
        await other.close()


def test_subscribing_twice_is_refused(tmp_path: Path) -> None:
    feed = ChangeFeed(SqliteResourceStore(str(tmp_path / "x.db")))
    feed.subscribe("audit", Recorder())
    with pytest.raises(ValueError, match="already subscribed"):
        feed.subscribe("audit", Recorder())


# A consumer process that records each batch durably, then dies by SIGKILL while handling
# its second batch: after the effect, before the cursor moves.
CRASHING_CONSUMER = textwrap.dedent("""
    import asyncio, os, signal, sys
    from fhirpm.changes import ChangeFeed
    from fhirpm.storage.sqlite import SqliteResourceStore

    db, log_path = sys.argv[1], sys.argv[2]

    async def main():
        store = SqliteResourceStore(db)
        await store.open()
        calls = 0

        async def handler(batch):
            nonlocal calls
            calls += 1
            with open(log_path, "a") as log:
                log.write(" ".join(str(v.seq) for v in batch) + "\\n")
                log.flush()
                os.fsync(log.fileno())
            if calls == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        await ChangeFeed(store).catch_up("crashy", handler, batch=3)

    asyncio.run(main())
""")


async def test_a_consumer_killed_mid_batch_resumes_with_that_batch(
        store: SqliteResourceStore, tmp_path: Path) -> None:
    await write(store, *[f"r{n}" for n in range(8)])
    log_path = tmp_path / "effects.log"
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CRASHING_CONSUMER, store.path, str(log_path)],
        cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    batches = [[int(s) for s in line.split()] for line in log_path.read_text().splitlines()]
    seqs = await all_seqs(store)
    assert batches == [seqs[0:3], seqs[3:6]]
    assert await store.get_cursor("crashy") == seqs[2]  # only the first batch was confirmed

    # restart: the unconfirmed batch comes again, then the rest; nothing is skipped
    resumed = Recorder()
    assert await ChangeFeed(store).catch_up("crashy", resumed, batch=3) == 5
    assert resumed.seen == seqs[3:]
    assert await store.get_cursor("crashy") == seqs[-1]
    delivered = [s for b in batches for s in b] + resumed.seen
    assert sorted(set(delivered)) == seqs  # at least once: every change, in order
