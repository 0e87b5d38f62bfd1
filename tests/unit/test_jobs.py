"""Periodic jobs: one run per interval across processes, leases through the real store."""

from __future__ import annotations

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
