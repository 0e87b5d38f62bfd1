"""Group commit: many requests' AuditEvents stored in one unit of work.

A read has no unit of work of its own, and one commit per read would cost more than the
read. `GroupCommit.submit` queues the events and waits until they are committed; one
flusher task at a time takes everything queued so far and writes it in one unit. While
that unit commits, new events queue up and form the next group, so the group grows with
the load and an idle server commits after two turns of the loop (no timer). A caller whose
group fails gets the error: the read then fails too (fail-closed) instead of answering
without its audit record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger("fhirpm.audit")

Writer = Callable[[list[Any]], Awaitable[None]]  # the records of one group


class GroupCommit:
    def __init__(self, writer: Writer, *, max_events: int = 500) -> None:
        self._writer = writer
        self._max = max_events
        self._queue: deque[tuple[Sequence[Any], asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.groups = 0  # committed groups (diagnostics, tests)
        self.on_commit: Callable[[int], None] | None = None  # (records) after each group

    async def submit(self, events: Sequence[Any]) -> None:
        """Store `events`; returns once they are committed, raises if they could not be."""
        if not events:
            return
        # A cancelled request cancels only its own future: its events stay queued and are
        # written with the group (the flusher skips futures already done), so no shield.
        await self._queued(events)

    def enqueue(self, events: Sequence[Any]) -> asyncio.Future[None] | None:
        """Queue `events` without waiting (for callers that must not wait: see Recorder)."""
        if not events:
            return None
        future = self._queued(events)
        future.add_done_callback(_log_failure)
        return future

    def _queued(self, events: Sequence[Any]) -> asyncio.Future[None]:
        """Queue `events` for the next group; the future settles when it is stored."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((events, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="audit-group-commit")
        return future

    async def drain(self) -> None:
        """Wait until everything queued so far is stored (shutdown, tests)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        # Two turns of the loop before taking the queue: requests whose bytes have arrived
        # are read and handled in them and join this group. Over HTTP that took groups
        # from ~7 to ~16 records (fhirpm_audit_group_*) and reads with the trail on from
        # ~0.5 to ~0.6 of reads without it (docs/performance.md); alone, it costs two turns.
        for _ in range(_TURNS):
            await asyncio.sleep(0)
        while self._queue:
            group: list[tuple[Sequence[Any], asyncio.Future[None]]] = []
            size = 0
            while self._queue and (not group or size + len(self._queue[0][0]) <= self._max):
                item = self._queue.popleft()
                group.append(item)
                size += len(item[0])
            events = [event for batch, _ in group for event in batch]
            try:
                await self._writer(events)
            except BaseException as exc:  # every waiter learns its events were not stored
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception)
                                             else RuntimeError("audit write cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            self.groups += 1
            if self.on_commit is not None:
                self.on_commit(len(events))
            for _, future in group:
                if not future.done():
                    future.set_result(None)


_TURNS = 2


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("an AuditEvent could not be stored: %s", future.exception())
