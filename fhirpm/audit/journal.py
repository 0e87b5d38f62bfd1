"""The audit journal: where a request's records become durable before its answer, to be
sealed into the store's chain in bulk moments later.

Committing a group of reads' records to the store cost about as much as the reads
themselves (a transaction, the hash chain, B-tree pages, the WAL: docs/performance.md),
all of it on the event loop. Here a request copies its records into this process's
journal file, mapped into memory (`mmap`, shared), and answers: the pages are the
kernel's page cache, so the records survive the process being killed, the durability
SQLite gives its commits with synchronous=NORMAL (`sync=True` adds an msync per append,
as synchronous=FULL syncs). A copy, not a `write()`: a system call lets go of Python's
lock, and taking it back from a thread busy sealing cost a read ~20 us. Files are
allocated whole when made (16 MB, a new one when full), so a full disk refuses a new file
(an OSError: the request fails, fail-closed), never a page of a mapped one.

Sealing (`seal_file`) takes the whole records past a file's cursor and, in one unit of
work, appends them to the store's chain (positions assigned inside the store's
transaction, as for every record) with the cursor moved past them; the cursor is a store
Document written with compare-and-swap, so a crash at any point neither loses nor repeats
a record, and several sealers of one file cannot both take the same records. Who seals:
- the sealer process (`fhirpm.audit.sealer`, started by `fhirpm serve`) sweeps every
  journal every 2 s: the work happens beside the server, not under its Python lock;
- without one, the owner itself, once 1,000 records wait or 0.25 s after the first;
- the owner before it reads its own trail (`settle`), so reads here see every record made
  here, and when it stops (`close`);
- whoever starts next, for the journal of a process that died (`sweep`).

Each process appends to journals of its own (`<host>-<pid>-<random>.jnl`), each held with
an exclusive `flock` while it lives: a journal nobody holds belongs to a dead process.
A finished file is retired: deleted, its cursor marked so and kept a day.

A line is a record's payload (the sealed bytes: compact JSON, so no raw newline or NUL)
and a newline; `draft_of` reads its instant and references back when it is sealed. The
file's unused end is zeros: a line counts once its newline is written and no zero comes
before it (a process killed mid-copy was never answered, and its partial line is left).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import mmap
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from fhirpm.storage.port import AuditDraft, ResourceStore, Sealer, VersionConflict

log = logging.getLogger("fhirpm.audit")

DOCS = "audit-journal"  # store Documents: each journal file's cursor
SUFFIX = ".jnl"
SEALER_LOCK = "sealer.lock"  # held by the sealer process (one per journal directory)
BATCH = 1_000  # records waiting that start the owner's own sealing at once
DELAY = 0.25  # seconds the first waiting record waits at most for it
CAPACITY = 16 << 20  # bytes of a journal file (a new one when full)
_READ_MOST = 4 << 20  # bytes one sealing transaction takes on
_READ_STEP = 128 << 10  # bytes read at a time looking for the written end
_TOMBSTONE_SECONDS = 86_400  # how long a retired file's cursor is kept

DraftOf = Callable[[bytes], AuditDraft]
Read = Callable[[int, int], bytes]  # (offset, count) -> bytes of a journal file


@dataclass
class _Segment:
    """One of this process's journal files, mapped; appended to while it is the newest."""

    path: Path
    fd: int
    map: mmap.mmap
    size: int = 0  # bytes appended

    def read(self, start: int, count: int) -> bytes:
        return self.map[start:min(start + count, self.size)]


class Journal:
    """This process's journal (module doc)."""

    def __init__(self, directory: str | Path, store: ResourceStore, seal: Sealer,
                 draft_of: DraftOf, *, sync: bool = False, batch: int = BATCH,
                 delay: float = DELAY, capacity: int = CAPACITY) -> None:
        self.directory = Path(directory)
        self.store = store
        self.seal = seal
        self.draft_of = draft_of
        self.sync = sync
        self.batch = batch
        self.delay = delay
        self.capacity = capacity
        self._segments: list[_Segment] = []
        self._waiting = 0  # records appended since this process last sealed
        self._sealing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()  # one sealing at a time here (settle waits for it)
        self.sealed = 0  # records this process sealed (diagnostics, tests)
        self.ready = False  # open: takes records (else the recorder commits them itself)

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> int:
        """Seal and delete the journals of processes that died, then start this one's;
        returns how many records were recovered."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # who saw what: ours
        recovered = await sweep(self.store, self.seal, self.draft_of, self.directory,
                                live=False)
        self._segments.append(self._new_segment())
        self.ready = True
        return recovered

    async def close(self) -> None:
        """Seal everything and retire this process's journal files; if the store refuses,
        leave them (logged) for the sealer or the next process to seal."""
        self.ready = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            await self.settle()
        except Exception as exc:
            log.error("audit journal: records left unsealed in %s (%s); the sealer or the "
                      "next server to start seals them", self.directory, exc)
            sealed = False
        else:
            sealed = True
        async with self._lock:
            for segment in self._segments:
                if sealed:
                    await _retire(self.store, segment.path, segment.size)
                segment.map.close()
                os.close(segment.fd)  # and with it the lock: the file is now a dead one's
            self._segments.clear()

    # -- appending (the request path) ----------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> None:
        """Make records durable now (raises OSError when they could not be)."""
        if not payloads:
            return
        data = (payloads[0] if len(payloads) == 1 else b"\n".join(payloads)) + b"\n"
        segment = self._segments[-1]
        if segment.size + len(data) > len(segment.map):
            segment = self._new_segment(len(data))
            self._segments.append(segment)
        start, end = segment.size, segment.size + len(data)
        segment.map[start:end] = data
        if self.sync:
            page = start & ~(mmap.PAGESIZE - 1)
            segment.map.flush(page, end - page)
        segment.size = end
        self._waiting += len(payloads)
        self._schedule()

    def _schedule(self) -> None:
        if self._sealing is not None and not self._sealing.done():
            return
        if self._waiting >= self.batch:
            self._start()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._start)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sealing is None or self._sealing.done():
            self._sealing = asyncio.get_running_loop().create_task(
                self._background(), name="audit-journal-seal")

    async def _background(self) -> None:
        """Seal here unless the sealer process does (then only retire full files)."""
        loop = asyncio.get_running_loop()
        try:
            if sealer_running(self.directory):
                self._waiting = 0
                await self._retire_full()
            else:
                await self.settle()
        except Exception as exc:  # the records stay in the journal; try again later
            log.error("audit journal: could not seal records into the store: %s", exc)
            if self._timer is None:
                self._timer = loop.call_later(self.delay, self._start)
            return
        if self._waiting:  # appended while this ran: their own round (once this ended)
            loop.call_soon(self._schedule)

    # -- sealing -------------------------------------------------------------------------

    async def settle(self) -> None:
        """Return once every record appended here so far is in the store's chain."""
        async with self._lock:
            taken = self._waiting  # appended later: counted for the next round
            for segment in self._segments:
                self.sealed += await seal_file(self.store, self.seal, self.draft_of,
                                               segment.path.name, segment.read)
            self._waiting = max(0, self._waiting - taken)
            await self._retire_full()

    async def unsealed(self) -> int:
        """Bytes of this process's records not yet sealed into the chain (the sealer's lag;
        read at /metrics)."""
        total = 0
        for segment in list(self._segments):
            total += max(0, segment.size - await _cursor(self.store, segment.path.name))
        return total

    async def _retire_full(self) -> None:
        """Retire the full files (all but the newest) whose records are all sealed."""
        while len(self._segments) > 1:
            oldest = self._segments[0]
            if await _cursor(self.store, oldest.path.name) < oldest.size:
                return
            await _retire(self.store, oldest.path, oldest.size)
            oldest.map.close()
            os.close(oldest.fd)
            self._segments.pop(0)

    def _new_segment(self, least: int = 0) -> _Segment:
        """A new file of `capacity` bytes (more if `least` needs it), allocated, mapped and
        locked for this process's lifetime."""
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        path = self.directory / name
        size = max(self.capacity, -(-least // mmap.PAGESIZE) * mmap.PAGESIZE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.posix_fallocate(fd, 0, size)  # blocks now: a full disk fails here, not later
            return _Segment(path, fd, mmap.mmap(fd, size))
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise


# -- sealing any journal file ---------------------------------------------------------------


async def seal_file(store: ResourceStore, seal: Sealer, draft_of: DraftOf, name: str,
                    read: Read) -> int:
    """Seal the whole records of journal file `name` past its cursor into the chain, a
    unit of work per few MB; returns how many. Safe beside other sealers of the file."""
    count = 0
    while True:
        doc = await store.doc_get(DOCS, name)
        cursor = orjson.loads(doc.body) if doc is not None else {"offset": 0}
        if cursor.get("retired"):
            return count
        done = cursor["offset"]
        chunk = _written(read, done)
        end = chunk.rfind(b"\n") + 1
        if not end:
            return count
        drafts = [draft_of(line) for line in chunk[:end].splitlines()]
        rev = doc.rev if doc is not None else 0
        try:
            async with store.unit_of_work() as unit:
                await unit.audit_append(drafts, seal)
                await unit.doc_put(DOCS, name, orjson.dumps({"offset": done + end}),
                                   expected_rev=rev)
        except VersionConflict:
            now = await store.doc_get(DOCS, name)
            if (now.rev if now is not None else 0) != rev:
                continue  # another sealer moved the cursor first: read it again
            raise  # refused for another reason: the records wait in the journal
        count += len(drafts)


async def sweep(store: ResourceStore, seal: Sealer, draft_of: DraftOf, directory: Path, *,
                live: bool) -> int:
    """Seal the journals in `directory`: those of dead processes, which are then retired,
    and (`live`) those of running ones too. Returns how many records it sealed."""
    total = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # retired meanwhile
        try:
            dead = try_lock(fd)
            if not (dead or live):
                continue
            total += await seal_file(store, seal, draft_of, path.name,
                                     lambda start, count, fd=fd: os.pread(fd, count, start))
            if dead:
                done = await _cursor(store, path.name)
                size = os.fstat(fd).st_size
                left = os.pread(fd, min(size - done, _READ_MOST), done) if done < size else b""
                if left.strip(b"\0"):
                    log.error("audit journal %s: its last %d bytes are not a whole record "
                              "(the process stopped mid-copy, before answering); left out",
                              path.name, len(left.rstrip(b"\0")))
                await _retire(store, path, done)
        finally:
            os.close(fd)
    if total and not live:
        log.warning("audit journal: %d records of stopped processes sealed into the chain",
                    total)
    return total


def _written(read: Read, start: int) -> bytes:
    """What was written from `start` on (up to `_READ_MOST`): up to the first zero byte,
    read a step at a time (a file is mostly its unused zeros)."""
    parts: list[bytes] = []
    taken = 0
    while taken < _READ_MOST:
        part = read(start + taken, _READ_STEP)
        zero = part.find(0)
        if zero >= 0:
            parts.append(part[:zero])
            break
        parts.append(part)
        taken += len(part)
        if len(part) < _READ_STEP:
            break
    return b"".join(parts)


def sealer_running(directory: Path) -> bool:
    """Whether a sealer process holds this directory's sealer lock."""
    try:
        fd = os.open(directory / SEALER_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return not try_lock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def try_lock(fd: int, mode: int = fcntl.LOCK_EX) -> bool:
    """Whether nobody holds a lock on the file (taking one, released with the fd)."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _cursor(store: ResourceStore, name: str) -> int:
    doc = await store.doc_get(DOCS, name)
    return orjson.loads(doc.body)["offset"] if doc is not None else 0


async def _retire(store: ResourceStore, path: Path, offset: int) -> None:
    """A finished file: deleted, then its cursor marked retired and kept a day (a sealer
    that opened the file before it went finds nothing past the cursor; a cursor deleted
    at once would let it start the file over)."""
    path.unlink(missing_ok=True)
    await store.doc_put(DOCS, path.name, orjson.dumps({"offset": offset, "retired": True}),
                        expires_at=int(time.time()) + _TOMBSTONE_SECONDS)
