"""The sealer process: seals every journal of a store into its audit chain (journal.py),
beside the server rather than under its Python lock.

Sealing a record (its hash, its row, its share of a commit) is Python work; done by a
thread of the server it took the interpreter's lock from the event loop often enough to
cost reads ~10% of their throughput (docs/performance.md). In a process of its own it
runs on the other core. `fhirpm serve` starts one (`start`) and stops it after the
server has settled its own journal (`stop`).

It reads what it needs (the store URL and the audit settings: the HMAC key is a secret,
kept out of argv and the environment) as one JSON line on stdin, and stops when stdin
closes, so it never outlives the server, however that ends. Servers sharing a store each
start one; the sealer lock in the journal directory lets one work while the others wait,
and one of them takes over if it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from fhirpm.audit import journal, record

log = logging.getLogger("fhirpm.audit")

INTERVAL = 2.0  # seconds between sweeps of the journal directory
NICENESS = 19  # background priority: the server first, sealing when a core is free


async def follow(settings: Any, stop: asyncio.Event, *, interval: float = INTERVAL) -> None:
    """Sweep the store's journals every `interval` until `stop` is set."""
    from fhirpm.audit.wiring import journal_dir, trail_for
    from fhirpm.storage.factory import store_from_settings

    store = store_from_settings(settings)
    await store.open()
    try:
        where = journal_dir(store, settings.audit)
        if where is None:
            log.error("audit sealer: this store keeps no journal; nothing to do")
            return
        directory = Path(where)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        seal = trail_for(store, settings.audit).seal
        lock = os.open(directory / journal.SEALER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not journal.try_lock(lock):  # another sealer works here: wait to take over
                if await _stopped(stop, interval):
                    return
            while True:  # a sweep first: asked to stop at once, it still seals what waits
                try:
                    await journal.sweep(store, seal, record.draft_of, directory, live=True)
                except Exception as exc:  # the records wait in the journals: next sweep
                    log.error("audit sealer: %s", exc)
                if await _stopped(stop, interval):
                    return
        finally:
            os.close(lock)
    finally:
        await store.close()


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def start(settings: Any, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A sealer process for `settings`' store; `stop` it when the server has stopped."""
    process = subprocess.Popen([sys.executable, "-m", "fhirpm.audit.sealer"],
                               stdin=subprocess.PIPE, env=env)
    assert process.stdin is not None
    process.stdin.write(orjson.dumps({"store_url": settings.store_url,
                                      "audit": settings.audit.model_dump()}) + b"\n")
    process.stdin.flush()
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()  # the signal to stop (a killed server closes it too)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    from fhirpm import logs
    from fhirpm.config import Settings

    # Ctrl-C at `fhirpm serve` reaches the whole process group: the server stops, then
    # closes this one's stdin, which is how it stops (after a last sweep)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    line = sys.stdin.buffer.readline()
    if not line:
        return
    # behind the server for the CPU: the journal holds what waits, durable, so a busy
    # moment delays sealing, not answers
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    given = orjson.loads(line)
    settings = Settings(store_url=given["store_url"], audit=given["audit"])
    logs.configure(settings.log_level, settings.log_json)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def watch() -> None:  # stdin's end: the server stopped, or died
            sys.stdin.buffer.read()
            loop.call_soon_threadsafe(stop.set)
        threading.Thread(target=watch, name="sealer-stdin", daemon=True).start()
        await follow(settings, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
