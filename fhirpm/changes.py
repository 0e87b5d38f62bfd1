"""Change-feed consumers: deliver every committed version to a handler, at least once.

The store's history table is the change log (every committed version has a `seq`, in commit
order). A consumer is a name plus an async handler. `ChangeFeed.follow` reads the log from
the consumer's durable cursor, calls the handler with a batch, and only then moves the cursor
past that batch. A crash between the two re-delivers the batch on restart (at least once), so
handlers must be idempotent (key their effects by `(type, id, version)` or `seq`); a batch
is never skipped.

Waking up: a store that can announce its commits in-process (`add_commit_listener`, as the
SQLite adapter does) wakes followers at once; writes by other processes sharing the store are
seen within `poll_interval` seconds. A handler that raises is retried with the same batch
after `retry_delay` (doubling up to `poll_interval * 10`) and logged; the cursor stays put.

This module knows the storage port and nothing above it (no HTTP, no FHIR semantics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fhirpm.storage.port import ResourceStore, ResourceVersion

log = logging.getLogger("fhirpm.changes")

Handler = Callable[[Sequence[ResourceVersion]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    handler: Handler
    batch: int = 100


class ChangeFeed:
    """Follows the store's change log on behalf of named consumers with durable cursors."""

    def __init__(self, store: ResourceStore, *, poll_interval: float = 1.0,
                 retry_delay: float = 0.5) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self._consumers: dict[str, Consumer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeups: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}
        self._stopping = asyncio.Event()
        add_listener = getattr(store, "add_commit_listener", None)
        if add_listener is not None:
            add_listener(self.notify)

    # -- registration and lifecycle (wired into the app's lifespan) ---------------------

    def subscribe(self, name: str, handler: Handler, *, batch: int = 100) -> None:
        """Register a consumer to run from `start()` until `stop()`."""
        if name in self._consumers:
            raise ValueError(f"consumer {name!r} is already subscribed")
        self._consumers[name] = Consumer(name, handler, batch)

    async def start(self) -> None:
        """Run every subscribed consumer as a background task."""
        self._stopping.clear()
        for c in self._consumers.values():
            task = asyncio.create_task(self.follow(c.name, c.handler, batch=c.batch),
                                       name=f"change-feed:{c.name}")
            self._tasks.append(task)

    async def stop(self) -> None:
        """Stop every follower after its current batch and wait for them to finish."""
        self._stopping.set()
        self.notify()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def notify(self) -> None:
        """Something was committed: wake every waiting follower (safe from any thread)."""
        for event, loop in tuple(self._wakeups.items()):
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                event.set()
            else:
                loop.call_soon_threadsafe(event.set)

    # -- delivery -------------------------------------------------------------------------

    async def follow(self, name: str, handler: Handler, *, batch: int = 100) -> None:
        """Deliver the log to `handler` from `name`'s cursor until `stop()` is called."""
        wakeup = asyncio.Event()
        self._wakeups[wakeup] = asyncio.get_running_loop()
        delay = self.retry_delay
        try:
            while not self._stopping.is_set():
                wakeup.clear()  # before reading, so a commit during the read is not missed
                try:
                    delivered = await self.deliver_once(name, handler, batch=batch)
                    delay = self.retry_delay
                except Exception:
                    log.exception("change consumer %s failed; retrying the same batch", name,
                                  extra={"consumer": name})
                    await self._wait(wakeup, delay, wake_on_commit=False)
                    delay = min(delay * 2, self.poll_interval * 10)
                    continue
                if delivered == 0:
                    await self._wait(wakeup, self.poll_interval, wake_on_commit=True)
        finally:
            self._wakeups.pop(wakeup, None)

    async def deliver_once(self, name: str, handler: Handler, *, batch: int = 100) -> int:
        """Hand the next batch after `name`'s cursor to `handler`, then advance the cursor.

        Returns how many versions were delivered (0: the consumer is up to date).
        """
        cursor = await self.store.get_cursor(name)
        changes = await self.store.changes(cursor, batch)
        if not changes:
            return 0
        await handler(changes)
        await self.store.set_cursor(name, changes[-1].seq)
        return len(changes)

    async def catch_up(self, name: str, handler: Handler, *, batch: int = 100) -> int:
        """Deliver everything committed so far (one-shot jobs and tests); returns the count."""
        total = 0
        while delivered := await self.deliver_once(name, handler, batch=batch):
            total += delivered
        return total

    async def _wait(self, wakeup: asyncio.Event, timeout: float, *, wake_on_commit: bool) -> None:
        waiters = [asyncio.ensure_future(self._stopping.wait())]
        if wake_on_commit:
            waiters.append(asyncio.ensure_future(wakeup.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
