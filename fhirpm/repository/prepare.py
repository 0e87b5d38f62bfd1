"""A transaction's validation and index extraction, ahead, in a process pool.

Everything a write does but SQLite runs under one GIL, so a large transaction Bundle kept
one core busy while the other idled. Once a transaction has given its entries their ids
and rewritten their references, each resource's content is final but for the meta the
server sets when it writes (`versionId`, `lastUpdated`), so the two costly, pure steps of
a write can run before it: validation (fhirkit-rs and the required bindings) and index
extraction (`search.extract`). `ahead` hands them to worker processes in chunks while the
event loop goes on writing; `Repository._write` takes a resource's result instead of doing
the work (`Repository.prepared`), and extracts again only the parameters that read `meta`
(`RegistryIndexer.meta_codes`), once the meta is real. Validating with a placeholder
`versionId`/`lastUpdated` finds exactly what validating the stored form would: the server
always writes those two well-formed.

What crosses the boundary is cheap to pickle: the resource dicts (decimals stay
`Decimal`, nothing goes through floats) one way, and errors or index entries as plain
tuples (`search.entry_codec`) the other.

One pool per process, started on first use with cores - 1 workers (none on one core),
used once its workers are up; until then, and for small transactions, custom search
parameters, another validator or indexer, or any failure of the pool, everything happens
in-process as before. The first few resources of a transaction always stay in-process, so
the event loop starts at once while the workers take the rest; a chunk no worker has picked up
yet when its first entry is written is cancelled and done in-process too. `shutdown()`
stops the workers (the app's lifespan calls it; interpreter exit would too).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import asynccontextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Issue
from fhirpm.fhir import jsonio
from fhirpm.fhir.bindings import BindingChecker
from fhirpm.fhir.validation import FhirkitValidator
from fhirpm.search import entry_codec
from fhirpm.search.extract import RegistryIndexer
from fhirpm.search.registry import Registry
from fhirpm.search.values import IndexEntry

if TYPE_CHECKING:
    from fhirpm.repository.service import Repository

log = logging.getLogger("fhirpm.prepare")

# The event loop prepares the first FIRST resources itself while a worker takes the next
# FIRST; tasks then double up to CHUNK resources (a task's overhead is amortised over its
# resources, but the loop must not wait long for the first results).
FIRST = 8
CHUNK = 32
MIN_WRITES = 32  # smaller transactions stay in-process
PLACEHOLDER_INSTANT = "1970-01-01T00:00:00.000000Z"

Item = tuple[str, str, dict[str, Any]]  # (type, id, resource as it will be stored, less meta)


# -- the pool, one per process ----------------------------------------------------------------

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_ready: Future[Any] | None = None  # the warm-up task: the pool is used once it is done
_failed = False  # the pool broke: unused until shutdown()
# writes whose validation and extraction a worker did ("ahead") or that were handed to
# the pool and done in-process after all ("in-process"): for tests and diagnostics
counts: Counter[str] = Counter()


_configured = 0  # worker processes wanted (Settings.transaction_workers)


def configure(workers: int) -> None:
    """How many worker processes to use from now on (0: prepare everything in-process);
    the composition root passes the setting, before the pool's first use."""
    global _configured
    _configured = max(0, workers)


def worker_count() -> int:
    """The configured workers, at most cores - 1: the event loop keeps one."""
    cores = os.process_cpu_count() if hasattr(os, "process_cpu_count") else os.cpu_count()
    return min(_configured, max(0, (cores or 1) - 1))


def _started(local_base: str | None) -> ProcessPoolExecutor | None:
    """The pool if its workers are up; starts it (in the background) on first use."""
    global _pool, _ready
    ready = _ready
    if ready is not None:
        ok = ready.done() and not _failed and ready.exception() is None
        return _pool if ok else None
    with _lock:
        if _ready is None and worker_count() > 0:
            # spawn: forking a process with threads (the store's, the event loop's) may
            # copy a held lock into the child
            _pool = ProcessPoolExecutor(worker_count(),
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_follow_parent)
            _ready = _pool.submit(_warm, local_base)
            _ready.add_done_callback(_check_start)
    return None


def _check_start(ready: Future[Any]) -> None:
    if not ready.cancelled() and ready.exception() is not None:
        log.warning("the preparation pool did not start; writes prepare in-process",
                    exc_info=ready.exception())
        _broken()


async def start(local_base: str | None = None) -> bool:
    """Start the pool and wait until its workers are up (tests, warm starts)."""
    _started(local_base)
    ready = _ready
    if ready is None:
        return False
    await asyncio.wait([asyncio.wrap_future(ready)])
    return _started(local_base) is not None


def shutdown() -> None:
    """Stop the workers (after the tasks already handed to them); a later use restarts."""
    global _pool, _ready, _failed
    with _lock:
        pool, _pool, _ready, _failed = _pool, None, None, False
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def _broken() -> None:
    """A worker died, or could not start (a script without a `__main__` guard cannot spawn
    workers): stop using the pool until `shutdown()`, rather than respawn it again and
    again; writes prepare in-process meanwhile. Only a flag: this runs in the executor's
    own callbacks, under its shutdown lock (`shutdown()` here would deadlock), and a broken
    executor stops its workers itself."""
    global _failed
    _failed = True


# -- in the workers -----------------------------------------------------------------------------


def _follow_parent() -> None:
    """Exit when the server process dies, even by SIGKILL: a worker waits on a queue
    whose other end it holds itself, so it would never notice and linger forever."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent.sentinel,), daemon=True,
                         name="fhirpm-prepare-parent").start()


def _exit_after(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


@cache
def _tools(local_base: str | None) -> tuple[FhirkitValidator, RegistryIndexer]:
    """The worker's validator and indexer, built as the composition root builds them."""
    return FhirkitValidator(), RegistryIndexer(Registry.load_default(), local_base=local_base)


def _warm(local_base: str | None) -> int:
    _, indexer = _tools(local_base)
    return len(indexer.registry.by_url)


def _prepare_chunk(local_base: str | None, items: list[Item]) -> list[tuple[Any, Any]]:
    """Per item: (None, encoded index entries), or (the validation errors, None)."""
    from fhirpm.repository.service import _with_meta

    validator, indexer = _tools(local_base)
    out: list[tuple[Any, Any]] = []
    for type, id, resource in items:
        stored = _with_meta(resource, id, 1, PLACEHOLDER_INSTANT)
        issues = validator.validate(stored, jsonio.dumps(stored))
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            out.append((errors, None))
            continue
        entries = indexer.extract(type, stored, exclude=indexer.meta_codes(type))
        out.append((None, entry_codec.encode(entries)))
    return out


# -- in the server ------------------------------------------------------------------------------


@cache
def _official_revision() -> tuple[int, int]:
    official = Registry.load_default()
    return official.revision, len(official.by_url)


def _local_base(repo: Repository) -> tuple[bool, str | None]:
    """(whether the workers can stand in for `repo`'s validator and indexer, its base)."""
    validator, indexer = repo.validator, repo.indexer
    if type(validator) is not FhirkitValidator or type(indexer) is not RegistryIndexer:
        return False, None
    if (validator.bindings is not BindingChecker.load_default()
            or indexer.bindings is not BindingChecker.load_default()):
        return False, None
    registry = indexer.registry
    if (registry.revision, len(registry.by_url)) != _official_revision():
        return False, None  # custom search parameters: the workers do not know them
    return True, indexer.local_base


class Prepared:
    """One resource's validation and extraction, done (or being done) by a worker."""

    __slots__ = ("_at", "_chunk", "resource")

    def __init__(self, resource: dict[str, Any], chunk: Future[Any], at: int) -> None:
        self.resource = resource
        self._chunk = chunk
        self._at = at

    async def result(self, indexer: RegistryIndexer, type: str, stored: dict[str, Any]
                     ) -> tuple[list[Issue], list[IndexEntry] | None] | None:
        """(errors, None) or ([], every index entry of `stored`, the resource with its
        real meta); None: the worker did not get to it, do it in-process after all."""
        chunk = self._chunk
        if not chunk.done():
            if chunk.cancel():  # no worker took it yet: the event loop gets there first
                counts["in-process"] += 1
                return None
            await asyncio.wait([asyncio.wrap_future(chunk)])  # running: its outcome is near
        if chunk.cancelled() or chunk.exception() is not None:  # (logged by _chunk_done)
            counts["in-process"] += 1
            return None
        counts["ahead"] += 1
        errors, rows = chunk.result()[self._at]
        if errors:
            return errors, None
        entries = entry_codec.decode(rows)
        entries += indexer.extract_meta(type, stored)
        return [], entries


def _chunk_done(chunk: Future[Any]) -> None:
    if chunk.cancelled() or chunk.exception() is None:
        return
    log.warning("a preparation task failed; its writes prepare in-process",
                exc_info=chunk.exception())
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(chunk.exception(), BrokenProcessPool):
        _broken()


@asynccontextmanager
async def ahead(repo: Repository, items: Sequence[Item]) -> AsyncIterator[int]:
    """Prepare `items` (final but for meta) in the pool while the body runs; yields how
    many were handed to workers. `repo._write` finds them by resource identity."""
    handed: list[dict[str, Any]] = []
    chunks: list[Future[Any]] = []
    eligible, local_base = (False, None) if len(items) < MIN_WRITES else _local_base(repo)
    pool = _started(local_base) if eligible else None
    if pool is not None:
        try:
            for start, end in _spans(len(items)):
                part = list(items[start:end])
                chunk = pool.submit(_prepare_chunk, local_base, part)
                chunk.add_done_callback(_chunk_done)
                chunks.append(chunk)
                for at, (_, _, resource) in enumerate(part):
                    repo.prepared[id(resource)] = Prepared(resource, chunk, at)
                    handed.append(resource)
        except Exception:  # the pool is shutting down or broken: in-process after all
            log.warning("preparation pool unavailable", exc_info=True)
            _broken()
    try:
        yield len(handed)
    finally:
        for resource in handed:
            repo.prepared.pop(id(resource), None)
        for chunk in chunks:
            chunk.cancel()  # the transaction failed early: no work for nothing


def _spans(count: int) -> Iterator[tuple[int, int]]:
    """The [start, end) of each task: all but the first FIRST items, in growing chunks."""
    start, size = FIRST, FIRST
    while start < count:
        yield start, min(start + size, count)
        start += size
        size = min(2 * size, CHUNK)
