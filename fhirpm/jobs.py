"""Periodic background jobs that several server processes share: each run happens once.

A job is a name, an interval and an async handler (expire scheduling holds, roll the slot
horizon forward, purge audit events past retention). Every process runs the same timers;
before a run, a process takes the job's lease, a small store Document (`jobs/<name>`)
written by compare-and-swap with the owner and the time the lease ends. A process that loses
the race skips that run; a process that dies mid-run leaves a lease that simply expires.
The lease ends at `now + interval`, so a run is due again only after its interval, whoever
ran it last. Handlers should be idempotent anyway (a run longer than its interval can
overlap the next owner's).

`run_now(name)` runs a job once, lease included, and is what tests and CLI commands call:
nothing in a test waits for a timer. `held()` keeps the timers from running any job while
it is open (a run under way is waited for first), so nothing a test sets up is changed by
a run it did not ask for, such as the one every timer makes at startup.

This module knows the storage port and nothing above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson

from fhirpm.storage.port import ResourceStore, VersionConflict

log = logging.getLogger("fhirpm.jobs")

LEASES = "jobs"

Handler = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    interval: float  # seconds between runs, across all processes
    handler: Handler


class Jobs:
    """The registry of periodic jobs and their timers (started and stopped by the app)."""

    def __init__(self, store: ResourceStore, *, owner: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._held = 0  # open `held()` blocks: timers run nothing while above zero
        self._timer_runs = 0  # runs started by a timer and not finished yet
        self._idle = asyncio.Event()  # set when the last timer run finishes
        self.skipped = 0  # timer runs skipped because held (diagnostics, tests)

    def every(self, name: str, interval: float, handler: Handler) -> None:
        """Register `handler` to run every `interval` seconds (once across processes)."""
        if name in self._jobs:
            raise ValueError(f"job {name!r} is already registered")
        if interval <= 0:
            raise ValueError("a job's interval must be positive")
        self._jobs[name] = Job(name, interval, handler)

    @property
    def names(self) -> list[str]:
        return sorted(self._jobs)

    async def run_now(self, name: str, *, force: bool = False) -> bool:
        """Run `name` once if its lease can be taken; False when it is not due yet or
        another process holds it. `force` runs it even if this process ran it less than an
        interval ago (tests, CLI commands), never over another process's lease."""
        job = self._jobs[name]
        if not await self._take_lease(job, force=force):
            return False
        await job.handler()
        return True

    async def start(self) -> None:
        self._stopping.clear()
        for job in self._jobs.values():
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"job:{job.name}"))

    async def stop(self) -> None:
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """No timer runs a job while the block is open (`run_now` still does); a timer run
        already under way is waited for first (tests, maintenance windows)."""
        self._held += 1
        try:
            while self._timer_runs:
                self._idle.clear()
                await self._idle.wait()
            yield
        finally:
            self._held -= 1

    async def _loop(self, job: Job) -> None:
        while not self._stopping.is_set():
            if self._held:
                self.skipped += 1
            else:
                await self._timer_run(job)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=job.interval)

    async def _timer_run(self, job: Job) -> None:
        self._timer_runs += 1
        try:
            await self.run_now(job.name)
        except Exception:
            log.exception("job %s failed; it runs again after its interval", job.name,
                          extra={"job": job.name})
        finally:
            self._timer_runs -= 1
            if not self._timer_runs:
                self._idle.set()

    async def _take_lease(self, job: Job, *, force: bool) -> bool:
        now = self._clock()
        held = await self.store.doc_get(LEASES, job.name)
        if held is not None:
            lease = orjson.loads(held.body)
            mine = lease["owner"] == self.owner
            if lease["until"] > now and not (force and mine):
                return False  # not due yet, or another process is running it
        body = orjson.dumps({"owner": self.owner, "until": now + job.interval,
                             "started": now})
        try:
            await self.store.doc_put(LEASES, job.name, body,
                                     expected_rev=held.rev if held is not None else 0)
        except VersionConflict:
            return False  # another process took it first
        return True
