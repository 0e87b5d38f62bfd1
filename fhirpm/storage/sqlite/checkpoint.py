"""Checkpoints off the commit path: a thread of its own folds the WAL back into the database.

SQLite's default checkpoints run inside a COMMIT: once the WAL holds 1,000 pages, the
committing connection copies the frames to the database file and syncs both files before
COMMIT returns, and whoever waits for that commit (an HL7 v2 sender waiting for its ACK, a
REST client) waits for the checkpoint too. A unit that touches many scattered pages (an HL7
v2 message: ~1 MB of WAL) ran one every few commits (docs/performance.md, HL7 v2 inbound).

Here the writer's own checkpoints happen only past a much larger bound (`WAL_BOUND_PAGES`),
which caps the WAL if this thread falls behind; below it, this thread runs PASSIVE
checkpoints on its own connection after commits, at most once per `interval`. A PASSIVE
checkpoint takes no lock a writer or reader waits for (SQLite lets one writer append to the
WAL while it copies), so commits go on meanwhile. Durability is unchanged: a checkpoint
copies only committed frames and syncs the WAL before it writes the database.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("fhirpm.storage.sqlite")

# WAL pages past which a commit checkpoints itself (SQLite's wal_autocheckpoint): the bound
# the WAL keeps if the checkpointer falls behind (64 MB of 4 KB pages)
WAL_BOUND_PAGES = 16_384
INTERVAL = 0.1  # seconds between two checkpoints: each copies what the commits meanwhile wrote


class Checkpointer:
    """One thread, one connection; `poke()` after a commit, `stop()` before closing."""

    def __init__(self, path: str, interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.passes = 0  # checkpoints run so far (tests wait on it: `wait_passes`)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="fhirpm-sqlite-checkpoint",
                                        daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Something was committed: checkpoint soon. Cheap, never blocks (the event loop
        calls it after every unit of work)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait_passes(self, count: int, timeout: float) -> bool:
        """Wait until `count` checkpoints have run (for tests); False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self.passes >= count, timeout)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._wake.clear()  # commits from here on call for the next pass
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the writer's bound still caps the WAL
                    log.warning("WAL checkpoint failed: %s", exc)
                with self._done:
                    self.passes += 1
                    self._done.notify_all()
                self._stopping.wait(self.interval)  # paced: many commits, one checkpoint
        finally:
            conn.close()
