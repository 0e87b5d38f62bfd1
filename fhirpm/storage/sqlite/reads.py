"""Point reads of current versions on the event loop's connection, remembered while the
database does not change.

A read by id is the commonest request, and most reads find what an earlier read found. So
each query-only connection keeps the current versions it read, keyed by (type, id), and
asks SQLite before every read whether anything was committed since: `PRAGMA data_version`
changes whenever another connection (this process's writer, another process, the CLI
loader) commits. Any change forgets everything remembered; nothing is ever served from
before the last commit the pragma saw, so a read answers what the database held at that
moment, exactly as a query would. The pragma costs about a third of the query it saves
(the join, the body copied out, the version object built), measured in
docs/performance.md.

Versions are immutable and shared: callers must not change them (they are frozen).
"""

from __future__ import annotations

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
        self._seen = -1  # data_version when `_versions` was filled
        self._versions: dict[tuple[str, str], ResourceVersion] = {}

    def read(self, type: str, id: str) -> ResourceVersion | None:
        stamp = self.conn.execute("PRAGMA data_version").fetchone()[0]
        versions = self._versions
        if stamp != self._seen:
            versions.clear()
            self._seen = stamp
        key = (type, id)
        found = versions.get(key)
        if found is None:
            found = self.query(self.conn, type, id)
            if found is not None:  # a miss stays a query: ids that do not exist are many
                if len(versions) >= self.limit:
                    versions.clear()
                versions[key] = found
        return found
