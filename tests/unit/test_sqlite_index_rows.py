"""SQLite index rows inserted a batch at a time (fhirpm.storage.sqlite.index.Rows): the
rows a table gets in one statement over a JSON array are exactly the rows one insert per
row gives, whatever the text holds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
from fhirpm.storage.sqlite import index, schema

ODD_TEXT = ['plain', 'quote " and backslash \\', 'line\nbreak\ttab', 'accents éü 日本 🩺',
            '', '\\u0041 written out']
WITH_NUL = [*ODD_TEXT, 'nul\x00inside']  # JSON text cannot carry it to SQLite: executemany


def _entries(n: int, texts: list[str]) -> list[IndexEntry]:
    text = texts[n % len(texts)]
    return [
        IndexEntry("name", StringValue(text.lower(), text)),
        IndexEntry("code", TokenValue("http://loinc.org", f"{n}-{text}", None)),
        IndexEntry("code", TokenValue(None, None, text)),
        IndexEntry("subject", ReferenceValue("Patient", f"p{n}", None, None,
                                             TokenValue("urn:sys", text))),
        IndexEntry("subject", ReferenceValue(None, None, f"http://x/{text}", "2")),
        IndexEntry("date", DateValue(-62135596800000000 + n, 253402300799999999)),
        IndexEntry("value", NumberValue(1.5, 1.45, 1.55)),
        IndexEntry("value-quantity", QuantityValue(2.0, float("-inf"), float("inf"),
                                                   "http://unitsofmeasure.org", "mg", "mg")),
        IndexEntry("url", UriValue(f"urn:{text}")),
    ]


def _table_rows(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in index.TABLES}


def _database(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn)
    return conn


@pytest.mark.parametrize("texts", [ODD_TEXT, WITH_NUL], ids=["text", "with-nul"])
def test_a_batch_of_rows_reads_back_as_one_insert_per_row_gives(tmp_path: Path,
                                                                texts: list[str]) -> None:
    batched, single = _database(tmp_path / "a.db"), _database(tmp_path / "b.db")
    rows = index.Rows()
    for rid in range(1, 40):  # enough rows per table for the one-statement path
        rows.add(rid, "Observation", _entries(rid, texts))
        lone = index.Rows()
        lone.add(rid, "Observation", _entries(rid, texts))
        for table, values in lone._grouped.items():  # one statement per row
            single.executemany(index._INSERT[table], values)
    rows.insert(batched)
    got, expected = _table_rows(batched), _table_rows(single)
    assert got == expected
    assert len(got["ix_string"]) == 39 and len(got["ix_quantity"]) == 39
    assert {type(r[2]) for r in got["ix_date"]} == {int}  # integers stay integers
