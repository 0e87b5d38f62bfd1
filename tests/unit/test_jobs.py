"""Periodic jobs: one run per interval across processes, leases through the real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fhirpm.jobs import Jobs
from fhirpm.storage.sqlite import SqliteResourceStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_one_run_per_interval_across_processes(tmp_path: Path) -> None:
    store = SqliteResourceStore(str(tmp_path / "jobs.db"))
    await store.open()
    try:
        clock = Clock()
        runs: list[str] = []

        async def record(who: str) -> None:
            runs.append(who)

        a = Jobs(store, owner="a", clock=clock)
        b = Jobs(store, owner="b", clock=clock)  # a second server process on the same store
        a.every("expire", 60, lambda: record("a"))
        b.every("expire", 60, lambda: record("b"))

        assert await a.run_now("expire") is True
        assert await b.run_now("expire") is False  # a's lease holds for the interval
        assert await b.run_now("expire", force=True) is False  # never over another's lease
        assert await a.run_now("expire") is False  # not due yet
        assert await a.run_now("expire", force=True) is True  # due or not, for tests/CLI
        clock.now += 61
        assert await b.run_now("expire") is True  # due again: whoever comes first
        assert runs == ["a", "a", "b"]
    finally:
        await store.close()


async def test_registration_is_checked(tmp_path: Path) -> None:
    store = SqliteResourceStore(str(tmp_path / "jobs.db"))
    jobs = Jobs(store)

    async def nothing() -> None:
        return None

    jobs.every("x", 1, nothing)
    for bad in (("x", 1), ("y", 0)):
        try:
            jobs.every(bad[0], bad[1], nothing)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")
    assert jobs.names == ["x"]


async def test_held_waits_for_a_timer_run_then_keeps_the_timers_still(tmp_path: Path) -> None:
    store = SqliteResourceStore(str(tmp_path / "jobs.db"))
    await store.open()
    jobs = Jobs(store, owner="a")
    entered, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def slow() -> None:
        order.append("run")
        entered.set()
        await release.wait()
        order.append("run finished")

    jobs.every("slow", 3600, slow)
    try:
        await jobs.start()  # every timer runs its job once at startup
        await asyncio.wait_for(entered.wait(), timeout=10)

        async def hold() -> None:
            async with jobs.held():
                order.append("held")

        holding = asyncio.create_task(hold())
        for _ in range(20):  # loop turns, not time: the hold must wait for the run
            await asyncio.sleep(0)
        assert not holding.done()
        release.set()
        await asyncio.wait_for(holding, timeout=10)
        assert order == ["run", "run finished", "held"]

        await jobs.stop()
        async with jobs.held():
            await jobs.start()  # the startup run is skipped while held

            async def skipped() -> None:
                while not jobs.skipped:
                    await asyncio.sleep(0)
            await asyncio.wait_for(skipped(), timeout=10)
            assert await jobs.run_now("slow", force=True)  # explicit runs still happen
        assert order == ["run", "run finished", "held", "run", "run finished"]
    finally:
        await jobs.stop()
        await store.close()
