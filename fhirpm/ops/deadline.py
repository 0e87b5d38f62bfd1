"""The request time limit, without a timer or a registration per request.

`asyncio.timeout` costs every request a timer-heap push and cancel, and even a dict entry
per request added and removed costs a read by id a few microseconds. Instead a request
only notes its task (`start`); one sweeper task looks, every quarter of the limit, at the
tasks of the loop, finds those serving a request (the request is current in the task's
context: `fhirpm.ops.context`) that has no response yet at its deadline, marks the
request timed out and cancels its task, so the edge middleware can answer 503. A limit is
kept to within a quarter of itself (at most a second late).

The sweeper runs while requests arrive or wait and stops after one sweep interval without
any. (A read by id usually runs to its response without yielding to the loop: a sweeper
that stopped whenever nothing was in flight would be started again by nearly every read.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol


class Limited(Protocol):
    started: float  # the clock's reading when the request arrived
    status: int  # 0 until the response starts: the limit applies until then
    timed_out: bool
    task: asyncio.Task[Any] | None  # the task serving it (set by `start`)


class Deadlines:
    def __init__(self, limit: float, current: ContextVar[Any], *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """`current`: the context variable holding the request a task serves; `clock`:
        what `Limited.started` was read from."""
        self.limit = limit
        self.current = current
        self.interval = min(1.0, limit / 4)
        self.clock = clock
        self._sweeper: asyncio.Task[None] | None = None
        self._arrived = False  # a request started since the sweeper's last look

    def start(self, request: Limited) -> None:
        """Start `request`'s clock; its task is the current one."""
        task = request.task = asyncio.current_task()
        self._arrived = True
        if self._sweeper is None and task is not None:  # it clears this when it stops
            self._sweeper = task.get_loop().create_task(self._sweep(), name="fhirpm-deadlines")

    async def close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and not sweeper.done():
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _sweep(self) -> None:
        waiting = False
        try:
            while self._arrived or waiting:
                self._arrived = False
                await asyncio.sleep(self.interval)
                waiting = self._expire()
        finally:
            self._sweeper = None

    def _expire(self) -> bool:
        """Cancel the requests past their deadline; whether any others still wait."""
        waiting = False
        due = self.clock() - self.limit
        for task in asyncio.all_tasks():
            request = task.get_context().get(self.current)
            if (request is None or request.task is not task or request.status
                    or request.timed_out):
                continue
            if request.started <= due:
                request.timed_out = True
                task.cancel()
            else:
                waiting = True
        return waiting
