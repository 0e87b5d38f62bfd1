"""SQLite schema and its migrations (PRAGMA user_version counts applied migrations).

`history` holds every version's bytes and is also the change log: its AUTOINCREMENT `seq`
orders commits and is never reused. `resources` points at the current version of each
resource; search index tables hang off its `rid`.
"""

from __future__ import annotations

import sqlite3

from fhirpm.storage.sqlite import audit, index

CORE = """
CREATE TABLE history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    method TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (type, id, version)
);
CREATE INDEX history_type_seq ON history (type, seq);
CREATE INDEX history_last_updated ON history (last_updated);

CREATE TABLE resources (
    rid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    UNIQUE (type, id)
);

CREATE TABLE cursors (consumer TEXT PRIMARY KEY, seq INTEGER NOT NULL);

CREATE TABLE unique_keys (
    key TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL
);
CREATE INDEX unique_keys_holder ON unique_keys (type, id);
"""

DOCUMENTS = """
CREATE TABLE documents (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    rev INTEGER NOT NULL,
    body BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;
"""

MIGRATIONS: list[str] = [CORE, index.DDL, DOCUMENTS, index.SEARCH_DDL, index.REFERENCE_URL_DDL,
                         audit.DDL, audit.INDEXED_DDL, index.LEAN_DDL]


def migrate(conn: sqlite3.Connection) -> None:
    """Apply pending migrations, each in its own transaction."""
    (applied,) = conn.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(MIGRATIONS[applied:], start=applied + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-check under the write lock: another process may have migrated meanwhile
            (now,) = conn.execute("PRAGMA user_version").fetchone()
            if now >= number:
                conn.execute("COMMIT")
                continue
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
