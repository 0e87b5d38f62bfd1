"""Custom SearchParameters and reindex jobs.

`sync(ix)` keeps the registry in step with the SearchParameter resources in the store
(created through the API, by this or any other process): it runs before each search and
costs one indexed look at the newest SearchParameter version, skipped when the store tells
of its commits (SQLite's commit listener) and none happened in this process since the last
look less than RECHECK_SECONDS ago (other processes' changes are seen within that time).
A new or changed parameter is added to the registry at once, so every write from then on
indexes it, and gets a reindex job for the resources written before; until that job is
done the parameter is *pending*: search refuses it and the CapabilityStatement should not
list it.

Jobs are Documents in the collection `search-reindex` (key: the parameter URL, or
`all:<types>` for a `$reindex` of whole types), JSON bodies:

    {"url", "types", "for", "status": pending|running|done, "type_index", "cursor",
     "done", "total", "owner", "lease_until", "started", "finished"}

A worker claims a job by writing itself as `owner` with a lease (compare-and-swap on the
document's rev), processes a batch (re-extracts each current version and replaces its index
rows through `UnitOfWork.reindex`, no new versions), and writes its progress and a renewed
lease with compare-and-swap again. Several processes can run workers: a losing CAS means
another owns the job; a crashed worker's lease expires and the next claimer resumes from
the stored cursor (a search cursor over the types, pinned to the job's first page).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from fhirpm.fhir import jsonio
from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.search.query import SearchQuery
from fhirpm.search.registry import Component, SearchParamDef
from fhirpm.storage.port import HistoryQuery, VersionConflict

if TYPE_CHECKING:
    from fhirpm.repository.interactions import Interactions

log = logging.getLogger("fhirpm.search")

COLLECTION = "search-reindex"
LEASE_SECONDS = 30
BATCH = 200
_RETRY_SECONDS = 5  # how often a process re-tries claiming jobs another process holds
RECHECK_SECONDS = 1.0
_SEARCHABLE_TYPES = ("number", "date", "string", "token", "reference", "composite",
                     "quantity", "uri")


@dataclass
class _State:
    owner: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
    seen_seq: int = -1  # seq of the newest SearchParameter version synced
    official: frozenset[str] = frozenset()  # urls the registry had before any custom one
    custom: dict[str, SearchParamDef] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # urls whose job is not done
    worker: asyncio.Task[None] | None = None
    last_spawn: float = 0.0
    failed: bool = False  # the last worker stopped on an error (its lease will expire)
    listening: bool = False  # the store reports this process's commits
    dirty: bool = True  # a commit happened since the last look (or we cannot know)
    checked: float = 0.0  # monotonic time of the last look
    held: int = 0  # open `held()` blocks: no worker starts while this is above zero


_STATES: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()


def _state(ix: Interactions) -> _State:
    found = _STATES.get(ix)
    if found is None:
        found = _STATES[ix] = _State(official=frozenset(ix.repo.registry.by_url))
    return found


async def pending(ix: Interactions) -> set[str]:
    """URLs of parameters not searchable yet (after syncing with the store)."""
    return set((await sync(ix)).pending)


async def sync(ix: Interactions) -> _State:
    state = _state(ix)
    if not _stale(ix, state):
        return state
    head = await ix.repo.store.history(HistoryQuery(type="SearchParameter", count=1))
    seq = head[0].seq if head else 0
    if seq != state.seen_seq:
        await _load_custom(ix, state)
        state.seen_seq = seq
        await _refresh_pending(ix, state)
    elif state.pending:
        await _refresh_pending(ix, state)
    if state.pending:
        _spawn(ix, state)
    return state


def _stale(ix: Interactions, state: _State) -> bool:
    listen = getattr(ix.repo.store, "add_commit_listener", None)
    if listen is not None and not state.listening:
        listen(lambda: setattr(state, "dirty", True))
        state.listening = True
    now = time.monotonic()
    if (state.listening and not state.dirty and not state.pending
            and now - state.checked < RECHECK_SECONDS):
        return False
    state.dirty, state.checked = False, now
    return True


async def _load_custom(ix: Interactions, state: _State) -> None:
    found: dict[str, tuple[SearchParamDef, int]] = {}
    cursor = None
    while True:
        result = await ix.repo.store.search(SearchQuery(("SearchParameter",), count=500,
                                                        cursor=cursor))
        for v in result.matches:
            definition = definition_of(jsonio.loads(v.body))
            if definition is not None and definition.url not in state.official:
                found[definition.url] = (definition, v.seq)
        if not result.next_cursor:
            break
        cursor = result.next_cursor
    registry = ix.repo.registry
    for url in set(state.custom) - set(found):
        registry.remove(url)
        del state.custom[url]
    for url, (definition, seq) in found.items():
        if state.custom.get(url) == definition:
            continue
        clash = [b for b in definition.base if (other := registry.get(b, definition.code))
                 is not None and other.url != url]
        if clash:
            log.warning("SearchParameter %s: code %r is taken on %s; ignored", url,
                        definition.code, ", ".join(clash))
            continue
        registry.add(definition)
        state.custom[url] = definition
        await _ensure_job(ix, url, list(definition.base), seq)


def definition_of(resource: dict[str, Any]) -> SearchParamDef | None:
    """A SearchParameter resource as a registry entry (None when it cannot be searched)."""
    if resource.get("status") == "retired" or resource.get("type") not in _SEARCHABLE_TYPES:
        return None
    code, url, expression = resource.get("code"), resource.get("url"), resource.get("expression")
    base = tuple(b for b in resource.get("base") or () if b in RESOURCE_TYPES or
                 b in ("Resource", "DomainResource"))
    if not (isinstance(code, str) and isinstance(url, str) and base):
        return None
    if resource["type"] != "composite" and not isinstance(expression, str):
        return None
    return SearchParamDef(
        code=code, type=resource["type"], base=base, expression=expression, url=url,
        target=tuple(resource.get("target") or ()),
        modifier=tuple(resource.get("modifier") or ()),
        comparator=tuple(resource.get("comparator") or ()),
        component=tuple(Component(c.get("definition", ""), c.get("expression", ""))
                        for c in resource.get("component") or ()),
        chain=tuple(resource.get("chain") or ()))


# -- jobs -----------------------------------------------------------------------------------


async def _ensure_job(ix: Interactions, key: str, types: list[str], seq: int) -> None:
    """A job for parameter version `seq` unless one for it (or newer) exists."""
    if "Resource" in types or "DomainResource" in types:
        types = sorted(RESOURCE_TYPES)
    store = ix.repo.store
    doc = await store.doc_get(COLLECTION, key)
    if doc is not None and orjson.loads(doc.body).get("for", 0) >= seq:
        return
    with contextlib.suppress(VersionConflict):  # another process created it first
        await store.doc_put(COLLECTION, key, orjson.dumps(_new_job(key, types, seq)),
                            expected_rev=doc.rev if doc else 0)


def _new_job(key: str, types: list[str], seq: int) -> dict[str, Any]:
    return {"url": None if key.startswith("all:") else key, "types": types, "for": seq,
            "status": "pending", "type_index": 0, "cursor": None, "done": 0, "total": None,
            "owner": None, "lease_until": 0, "started": time.time(), "finished": None}


async def start(ix: Interactions, types: list[str]) -> str:
    """Start reindexing every resource of `types` (the `$reindex` operation); the job key."""
    key = f"all:{','.join(sorted(types)) if len(types) < 8 else len(types)}:{uuid.uuid4().hex}"
    await ix.repo.store.doc_put(COLLECTION, key, orjson.dumps(_new_job(key, types, 0)),
                                expected_rev=0)
    state = _state(ix)
    _spawn(ix, state, force=True)
    return key


async def status(ix: Interactions, key: str) -> dict[str, Any] | None:
    doc = await ix.repo.store.doc_get(COLLECTION, key)
    return orjson.loads(doc.body) if doc else None


async def _refresh_pending(ix: Interactions, state: _State) -> None:
    docs = await ix.repo.store.doc_list(COLLECTION)
    unfinished = {d.key for d in docs if orjson.loads(d.body).get("status") != "done"}
    state.pending = {url for url in state.custom if url in unfinished}


def _spawn(ix: Interactions, state: _State, force: bool = False) -> None:
    if state.held or (state.worker is not None and not state.worker.done()):
        return
    now = time.monotonic()
    if not force and now - state.last_spawn < _RETRY_SECONDS and state.worker is not None:
        return
    state.last_spawn = now
    state.worker = asyncio.get_running_loop().create_task(_work(ix, state))


@contextlib.asynccontextmanager
async def held(ix: Interactions) -> AsyncIterator[None]:
    """Keep this process's worker from starting while the block runs, so what a
    parameter looks like before its job finishes can be observed (tests, maintenance
    windows). A worker already running is waited for first; leaving the block lets the
    next look at the store start one."""
    state = _state(ix)
    state.held += 1
    try:
        if state.worker is not None and not state.worker.done():
            await state.worker
        yield
    finally:
        state.held -= 1


async def drain(ix: Interactions) -> None:
    """Wait until this process's worker has nothing left it can claim (tests, shutdown)."""
    state = _state(ix)
    if (state.worker is None or state.worker.done()) and await _claimable(ix, state):
        _spawn(ix, state, force=True)
    while state.worker is not None and not state.worker.done():
        await state.worker
        if state.failed:
            break  # respawning at once would fail the same way, forever; the lease retries
        if await _claimable(ix, state):
            _spawn(ix, state, force=True)
    await _refresh_pending(ix, state)


async def _claimable(ix: Interactions, state: _State) -> bool:
    now = time.time()
    for doc in await ix.repo.store.doc_list(COLLECTION):
        job = orjson.loads(doc.body)
        if job["status"] != "done" and (job["owner"] in (None, state.owner)
                                        or job["lease_until"] < now):
            return True
    return False


async def _work(ix: Interactions, state: _State) -> None:
    state.failed = False
    try:
        while True:
            claimed = await _claim(ix, state)
            if claimed is None:
                break
            await _run(ix, state, *claimed)
        await _refresh_pending(ix, state)
    except Exception:
        state.failed = True
        log.exception("reindex worker stopped; its lease will expire and the job resume")


async def _claim(ix: Interactions, state: _State) -> tuple[str, int, dict[str, Any]] | None:
    now = time.time()
    for doc in await ix.repo.store.doc_list(COLLECTION):
        job = orjson.loads(doc.body)
        if job["status"] == "done":
            continue
        if job["owner"] not in (None, state.owner) and job["lease_until"] >= now:
            continue
        job.update(owner=state.owner, lease_until=now + LEASE_SECONDS, status="running")
        try:
            rev = await ix.repo.store.doc_put(COLLECTION, doc.key, orjson.dumps(job),
                                              expected_rev=doc.rev)
        except VersionConflict:
            continue  # another worker claimed it first
        return doc.key, rev, job
    return None


async def _run(ix: Interactions, state: _State, key: str, rev: int,
               job: dict[str, Any]) -> None:
    store = ix.repo.store
    while job["status"] != "done":
        types = job["types"]
        if job["type_index"] >= len(types):
            job.update(status="done", finished=time.time(), owner=None)
        else:
            await _batch(ix, job, types[job["type_index"]])
            job["lease_until"] = time.time() + LEASE_SECONDS
        try:
            rev = await store.doc_put(COLLECTION, key, orjson.dumps(job), expected_rev=rev)
        except VersionConflict:
            log.info("reindex job %s was taken over by another worker", key)
            return
    state.pending.discard(key)


async def _batch(ix: Interactions, job: dict[str, Any], type_: str) -> None:
    """Reindex the next page of `type_`; advance the job's cursor (and type when done)."""
    store = ix.repo.store
    first = job["cursor"] is None
    result = await store.search(SearchQuery((type_,), count=BATCH, cursor=job["cursor"],
                                            total="accurate" if first else "none"))
    if first and result.total is not None:
        job["total"] = (job["total"] or 0) + result.total
    if result.matches:
        async with store.unit_of_work() as uow:
            for v in result.matches:
                entries = ix.repo.indexer.extract(v.type, jsonio.loads(v.body))
                await uow.reindex(v.type, v.id, v.version, entries)
    job["done"] += len(result.matches)
    if result.next_cursor:
        job["cursor"] = result.next_cursor
    else:
        job["cursor"] = None
        job["type_index"] += 1
