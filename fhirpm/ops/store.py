"""Store latency: a transparent wrapper around a ResourceStore that times its calls.

The repository is handed this wrapper, so every FHIR interaction's store work is measured
by operation (read, vread, search, history, commit, ...); anything the port does not name
(adapter extras such as `add_commit_listener`) passes straight through.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

from fhirpm.ops.metrics import Histogram
from fhirpm.storage.port import ResourceStore, UnitOfWork

_TIMED = ("read", "vread", "history", "history_count", "changes", "search", "doc_get",
          "doc_put", "doc_delete", "doc_list", "get_cursor", "set_cursor")


class TimedStore:
    def __init__(self, store: ResourceStore, histogram: Histogram) -> None:
        self.inner = store
        self._histogram = histogram
        for name in _TIMED:
            setattr(self, name, self._timed(name, getattr(store, name)))

    def _timed(self, name: str, call: Any) -> Any:
        histogram = self._histogram
        buckets = histogram.buckets
        row: list[float] | None = None  # the operation's series, bound at its first call

        async def timed(*args: Any, **kwargs: Any) -> Any:
            nonlocal row
            start = perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                seconds = perf_counter() - start
                if row is None:
                    row = histogram.row((name,))
                row[bisect_left(buckets, seconds)] += 1
                row[-1] += seconds
        timed.__name__ = name
        return timed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """The inner unit of work; its commit (leaving it without an error) is timed."""
        manager = self.inner.unit_of_work()
        uow = await manager.__aenter__()
        try:
            yield uow
        except BaseException as exc:
            if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            start = perf_counter()
            await manager.__aexit__(None, None, None)
            self._histogram.observe(("commit",), perf_counter() - start)
