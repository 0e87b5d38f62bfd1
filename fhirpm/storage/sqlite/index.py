"""Search index tables for SQLite: one table per value kind, rows keyed by resource `rid`.

Written in the same transaction as the version they describe; replaced wholesale on every
new version (a deleted resource keeps no index rows). The `param` column holds the code
qualified by the resource type (`Appointment.date`): codes repeat across types, and the
qualified key keeps one type's lookups off every other type's rows.

`SEARCH_DDL` (a later migration) qualifies existing rows and replaces the first indexes by
ones that end in `rid`, so an equality lookup lists its rows in rid order (search streams
them page by page) and per-row checks are index-only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

from fhirpm.search.values import (
    DateValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

DDL = """
CREATE TABLE ix_string (rid INTEGER NOT NULL, param TEXT NOT NULL, norm TEXT NOT NULL,
                        raw TEXT NOT NULL);
CREATE INDEX ix_string_lookup ON ix_string (param, norm);
CREATE INDEX ix_string_rid ON ix_string (rid);

CREATE TABLE ix_token (rid INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT,
                       text TEXT);
CREATE INDEX ix_token_code ON ix_token (param, code, system);
CREATE INDEX ix_token_system ON ix_token (param, system);
CREATE INDEX ix_token_rid ON ix_token (rid);

CREATE TABLE ix_reference (rid INTEGER NOT NULL, param TEXT NOT NULL, ref_type TEXT,
                           ref_id TEXT, url TEXT, version TEXT, id_system TEXT,
                           id_value TEXT);
CREATE INDEX ix_reference_target ON ix_reference (param, ref_id, ref_type);
CREATE INDEX ix_reference_url ON ix_reference (param, url);
CREATE INDEX ix_reference_identifier ON ix_reference (param, id_value, id_system);
CREATE INDEX ix_reference_rid ON ix_reference (rid);

CREATE TABLE ix_date (rid INTEGER NOT NULL, param TEXT NOT NULL, lo INTEGER NOT NULL,
                      hi INTEGER NOT NULL);
CREATE INDEX ix_date_lo ON ix_date (param, lo);
CREATE INDEX ix_date_hi ON ix_date (param, hi);
CREATE INDEX ix_date_rid ON ix_date (rid);

CREATE TABLE ix_number (rid INTEGER NOT NULL, param TEXT NOT NULL, value REAL NOT NULL,
                        lo REAL NOT NULL, hi REAL NOT NULL);
CREATE INDEX ix_number_value ON ix_number (param, value);
CREATE INDEX ix_number_rid ON ix_number (rid);

CREATE TABLE ix_quantity (rid INTEGER NOT NULL, param TEXT NOT NULL, value REAL NOT NULL,
                          lo REAL NOT NULL, hi REAL NOT NULL, system TEXT, code TEXT,
                          unit TEXT);
CREATE INDEX ix_quantity_value ON ix_quantity (param, value);
CREATE INDEX ix_quantity_rid ON ix_quantity (rid);

CREATE TABLE ix_uri (rid INTEGER NOT NULL, param TEXT NOT NULL, uri TEXT NOT NULL);
CREATE INDEX ix_uri_lookup ON ix_uri (param, uri);
CREATE INDEX ix_uri_rid ON ix_uri (rid);
"""

SEARCH_DDL = """
UPDATE ix_string SET param = (SELECT type FROM resources r WHERE r.rid = ix_string.rid)
    || '.' || param;
UPDATE ix_token SET param = (SELECT type FROM resources r WHERE r.rid = ix_token.rid)
    || '.' || param;
UPDATE ix_reference SET param = (SELECT type FROM resources r WHERE r.rid = ix_reference.rid)
    || '.' || param;
UPDATE ix_date SET param = (SELECT type FROM resources r WHERE r.rid = ix_date.rid)
    || '.' || param;
UPDATE ix_number SET param = (SELECT type FROM resources r WHERE r.rid = ix_number.rid)
    || '.' || param;
UPDATE ix_quantity SET param = (SELECT type FROM resources r WHERE r.rid = ix_quantity.rid)
    || '.' || param;
UPDATE ix_uri SET param = (SELECT type FROM resources r WHERE r.rid = ix_uri.rid)
    || '.' || param;
CREATE INDEX resources_live ON resources (type, deleted);
DROP INDEX ix_string_lookup;
CREATE INDEX ix_string_norm ON ix_string (param, norm, rid);
CREATE INDEX ix_string_raw ON ix_string (param, raw, rid);
DROP INDEX ix_token_code;
DROP INDEX ix_token_system;
CREATE INDEX ix_token_code ON ix_token (param, code, rid, system);
CREATE INDEX ix_token_system ON ix_token (param, system, rid);
DROP INDEX ix_reference_target;
DROP INDEX ix_reference_url;
DROP INDEX ix_reference_identifier;
CREATE INDEX ix_reference_target ON ix_reference (param, ref_id, ref_type, rid);
CREATE INDEX ix_reference_url ON ix_reference (param, url, rid);
CREATE INDEX ix_reference_identifier ON ix_reference (param, id_value, id_system, rid);
DROP INDEX ix_date_lo;
DROP INDEX ix_date_hi;
DROP INDEX ix_date_rid;
CREATE INDEX ix_date_lo ON ix_date (param, lo, hi, rid);
CREATE INDEX ix_date_hi ON ix_date (param, hi, lo, rid);
CREATE INDEX ix_date_rid ON ix_date (rid, param, lo, hi);
DROP INDEX ix_number_value;
DROP INDEX ix_number_rid;
CREATE INDEX ix_number_value ON ix_number (param, value, rid);
CREATE INDEX ix_number_rid ON ix_number (rid, param, value);
DROP INDEX ix_quantity_value;
CREATE INDEX ix_quantity_value ON ix_quantity (param, value, rid);
DROP INDEX ix_uri_lookup;
CREATE INDEX ix_uri_lookup ON ix_uri (param, uri, rid)
"""

# Local references are matched with `url IS NULL` (an absolute URL is parsed into type and
# id too): carrying url in the index keeps a reference lookup index-only.
REFERENCE_URL_DDL = """
DROP INDEX ix_reference_target;
CREATE INDEX ix_reference_target ON ix_reference (param, ref_id, ref_type, rid, url)
"""

# Fewer B-trees per index row (docs/performance.md, HL7 v2 inbound: a message's ~175 rows
# land on scattered leaves, and every index of a table is one more leaf per row):
# - `:exact` is served by the norm index (the norm of a raw value is `fold(raw)`, so an
#   exact match is among the rows whose norm is the value's fold);
# - the url and identifier indexes keep only the rows that have one: a local reference
#   (nearly all of them) has neither, and a search by either names a value.
LEAN_DDL = """
DROP INDEX IF EXISTS ix_string_raw;
DROP INDEX IF EXISTS ix_reference_url;
CREATE INDEX ix_reference_url ON ix_reference (param, url, rid) WHERE url IS NOT NULL;
DROP INDEX IF EXISTS ix_reference_identifier;
CREATE INDEX ix_reference_identifier ON ix_reference (param, id_value, id_system, rid)
    WHERE id_value IS NOT NULL
"""

TABLES = ("ix_string", "ix_token", "ix_reference", "ix_date", "ix_number", "ix_quantity",
          "ix_uri")


def _row(rid: int, type: str, entry: IndexEntry) -> tuple[str, tuple]:
    v = entry.value
    param = f"{type}.{entry.param}"
    match v:
        case StringValue():
            return "ix_string", (rid, param, v.norm, v.raw)
        case TokenValue():
            return "ix_token", (rid, param, v.system, v.code, v.text)
        case ReferenceValue():
            ident = v.identifier
            return "ix_reference", (
                rid, param, v.type, v.id, v.url, v.version,
                ident.system if ident else None, ident.code if ident else None,
            )
        case DateValue():
            return "ix_date", (rid, param, v.lo, v.hi)
        case NumberValue():
            return "ix_number", (rid, param, v.value, v.lo, v.hi)
        case QuantityValue():
            return "ix_quantity", (rid, param, v.value, v.lo, v.hi, v.system, v.code, v.unit)
        case UriValue():
            return "ix_uri", (rid, param, v.uri)
    raise TypeError(f"unknown index value {type(v).__name__}")


_INSERT = {
    "ix_string": "INSERT INTO ix_string VALUES (?,?,?,?)",
    "ix_token": "INSERT INTO ix_token VALUES (?,?,?,?,?)",
    "ix_reference": "INSERT INTO ix_reference VALUES (?,?,?,?,?,?,?,?)",
    "ix_date": "INSERT INTO ix_date VALUES (?,?,?,?)",
    "ix_number": "INSERT INTO ix_number VALUES (?,?,?,?,?)",
    "ix_quantity": "INSERT INTO ix_quantity VALUES (?,?,?,?,?,?,?,?)",
    "ix_uri": "INSERT INTO ix_uri VALUES (?,?,?)",
}


def _bulk(table: str, columns: int) -> str:
    picks = ", ".join(f"value->>{n}" for n in range(columns))
    return f"INSERT INTO {table} SELECT {picks} FROM json_each(?)"


# A batch's rows of a table as ONE statement over a JSON array (json_each), for the tables
# whose values are text, integers and nulls only (JSON carries them exactly; the number
# and quantity tables hold floats, infinities included, and keep executemany). One step
# instead of one per row: the writer thread, which inserts a unit's batches while the event
# loop goes on computing, releases and takes back the GIL once per table rather than once
# per row (~13 rows per resource), each time waiting for the loop's thread to let go.
_BULK_ROWS = 16  # fewer (a single write's few rows per table): executemany, as cheap
_BULK = {"ix_string": _bulk("ix_string", 4), "ix_token": _bulk("ix_token", 5),
         "ix_reference": _bulk("ix_reference", 8), "ix_date": _bulk("ix_date", 4),
         "ix_uri": _bulk("ix_uri", 3)}


class Rows:
    """Index rows of several resources, inserted together: one statement per table for a
    whole batch of puts rather than one per table per resource (a call costs more than
    the few rows a resource has in each table)."""

    def __init__(self) -> None:
        self._grouped: dict[str, list[tuple]] = {}

    def add(self, rid: int, type: str, entries: Sequence[IndexEntry]) -> None:
        grouped = self._grouped
        for entry in entries:
            table, row = _row(rid, type, entry)
            rows = grouped.get(table)
            if rows is None:
                grouped[table] = [row]
            else:
                rows.append(row)

    def insert(self, conn: sqlite3.Connection) -> None:
        """Insert what was added (and forget it)."""
        grouped, self._grouped = self._grouped, {}
        for table, rows in grouped.items():
            bulk = _BULK.get(table)
            if bulk is not None and len(rows) >= _BULK_ROWS:
                text = orjson.dumps(rows)
                if b"\\u0000" not in text:  # SQLite's JSON text would end at a NUL
                    conn.execute(bulk, (text,))
                    continue
            conn.executemany(_INSERT[table], rows)

    def __bool__(self) -> bool:
        return bool(self._grouped)


def delete(conn: sqlite3.Connection, rid: int) -> None:
    """Remove every index row of resource `rid`."""
    for table in TABLES:
        conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))


def replace(conn: sqlite3.Connection, rid: int, entries: Sequence[IndexEntry],
            had_rows: bool, type: str) -> None:
    """Replace the index rows of resource `rid` (of `type`) with `entries`."""
    if had_rows:
        delete(conn, rid)
    rows = Rows()
    rows.add(rid, type, entries)
    rows.insert(conn)


def reindex(conn: sqlite3.Connection, type: str, id: str, version: int,
            entries: Sequence[IndexEntry]) -> bool:
    """Replace the index rows of type/id if its current version is still `version` (a
    reindex job: no new version). False when it moved on or was deleted meanwhile."""
    row = conn.execute("SELECT rid FROM resources WHERE type = ? AND id = ? AND version = ? "
                       "AND deleted = 0", (type, id, version)).fetchone()
    if row is None:
        return False
    replace(conn, row[0], entries, had_rows=True, type=type)
    return True
