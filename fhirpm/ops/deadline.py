"""The request time limit, without a timer per request.

`asyncio.timeout` costs every request a timer-heap push and cancel (~5 us here, a few
per cent of a read). Instead a request registers its task and deadline in a dict, and
one sweeper task cancels the task of any request still without a response at its
deadline, marking it timed out so the edge middleware can answer 503. A limit is kept to
within a quarter of itself (at most a second late).

The sweeper runs while requests arrive and stops after one sweep interval without any.
A read by id usually runs to its response without yielding to the loop, so a sweeper that
stopped whenever nothing was in flight found nothing at its first look, ended, and was
started again by the next request: a task created and run per request (~10 us).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol


class Limited(Protocol):
    timed_out: bool


class Deadlines:
    def __init__(self, limit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.interval = min(1.0, limit / 4)
        self.clock = clock
        self._running: dict[Limited, tuple[asyncio.Task[object], float]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._arrived = False  # a request started since the sweeper's last look

    def start(self, request: Limited) -> None:
        """Start `request`'s clock; its task is the current one."""
        task = asyncio.current_task()
        if task is None:
            return
        self._running[request] = (task, self.clock() + self.limit)
        self._arrived = True
        if self._sweeper is None:  # it clears this itself when it stops
            self._sweeper = task.get_loop().create_task(self._sweep(), name="fhirpm-deadlines")

    def stop(self, request: Limited) -> None:
        """The request answered (or ended): its limit no longer applies."""
        self._running.pop(request, None)

    async def close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        self._running.clear()
        if sweeper is not None and not sweeper.done():
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _sweep(self) -> None:
        try:
            while self._running or self._arrived:
                self._arrived = False
                await asyncio.sleep(self.interval)
                now = self.clock()
                for request, (task, deadline) in list(self._running.items()):
                    if deadline <= now:
                        del self._running[request]
                        request.timed_out = True
                        task.cancel()
        finally:
            self._sweeper = None
