"""Point reads of current versions on the event loop's connection, remembered while the
database does not change.

A read by id is the commonest request, and most reads find what an earlier read found. So
the event loop's connection keeps the current versions it read, keyed by (type, id), and
asks SQLite whether anything was committed since: `PRAGMA data_version` changes whenever
another connection (this process's writer, another process, the CLI loader) commits. Not
every commit changes a resource (the audit trail's records, documents, cursors), so when
it has changed the connection also reads the resources' generation, the `history` table's
AUTOINCREMENT counter, which every stored version moves (and an expunge too: store.py),
and forgets everything remembered only when that moved. (The connection's own commits do
not change `data_version`.)

It asks once per turn of the event loop, at the turn's first read; the answer holds until
the next turn (a `call_soon`). That is still linearizable: a request served in this turn
arrived before the turn's first read looked (requests come in through the loop's poll,
which precedes the callbacks of the turn, and a request arriving later is handled in a
later turn, after the look has expired), so its answer is the database as it was at a
moment between its arrival and its response. A commit made by this process resumes its
writer through the loop, after the look expired as well. (Only code that commits through
a connection of its own without yielding to the loop, then reads in the same turn, could
see the look's older state: tests and tools, never a request.) Under load a turn serves many
reads (~13 with 16 busy connections), so the pragma's own cost (a read transaction) is
shared too; docs/performance.md has the figures.

Versions are immutable and shared: callers must not change them (they are frozen).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from fhirpm.storage.port import ResourceVersion

Query = Callable[[sqlite3.Connection, str, str], "ResourceVersion | None"]
LIMIT = 4096  # versions remembered per connection (a few MB of bodies at most)


class CurrentReads:
    """The current-version reads of one connection (used from one thread only)."""

    def __init__(self, conn: sqlite3.Connection, query: Query, *, limit: int = LIMIT) -> None:
        self.conn = conn
        self.query = query
        self.limit = limit
        self._seen = -1  # data_version when last looked
        self._generation = -1  # the resources' generation `_versions` belong to
        self._versions: dict[tuple[str, str], ResourceVersion] = {}
        # the loop whose current turn `_seen` is good for (None: look before reading); a
        # loop stopped before its next turn cannot leave a look standing for another loop
        self._looked_on: asyncio.AbstractEventLoop | None = None

    def read(self, type: str, id: str) -> ResourceVersion | None:
        loop = asyncio.get_running_loop()
        if self._looked_on is not loop:
            self._check(loop)
        versions = self._versions
        key = (type, id)
        found = versions.get(key)
        if found is None:
            found = self.query(self.conn, type, id)
            if found is not None:  # a miss stays a query: ids that do not exist are many
                if len(versions) >= self.limit:
                    versions.clear()
                versions[key] = found
        return found

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        """Forget everything if anything committed since the last look; look again at the
        next turn of the event loop (module doc)."""
        stamp = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if stamp != self._seen:
            self._seen = stamp
            # read after data_version: a version committed in between is seen here
            generation = resource_generation(self.conn)
            if generation != self._generation:
                self._versions.clear()
                self._generation = generation
        self._looked_on = loop
        loop.call_soon(self._expire)

    def _expire(self) -> None:
        self._looked_on = None


def resource_generation(conn: sqlite3.Connection) -> int:
    """A number that changes whenever a resource version is stored or expunged."""
    row = conn.execute(_GENERATION).fetchone()
    return row[0] if row else 0


_GENERATION = "SELECT seq FROM sqlite_sequence WHERE name = 'history'"
