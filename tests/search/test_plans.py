"""Searches hit indexes: EXPLAIN QUERY PLAN of representative queries never scans an index
table or the resources/history tables, and single equality parameters stream in rid order
(no temporary sort of the whole match set)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.search.parse import SearchParser
from fhirpm.search.query import SearchQuery
from fhirpm.storage.sqlite import index, schema
from fhirpm.storage.sqlite.search import explain, run
from tests.search.helpers import put_all
from tests.search.test_parameters import DATA

SINGLE = [
    ("Patient", "name=chal"), ("Patient", "family:exact=Chalmers"),
    ("Patient", "identifier=http://acme.org/patient|2345"), ("Patient", "gender=male"),
    ("Patient", "identifier=http://acme.org/patient|2345,http://acme.org/patient|6789"),
    ("Patient", "birthdate=1974-12-25"), ("Patient", "birthdate=ge1980"),
    ("Patient", "birthdate=lt1980"), ("Patient", "general-practitioner=Practitioner/dr1"),
    ("Patient", "_id=p1"), ("Patient", "_lastUpdated=gt2020-01-01"),
    ("Patient", "_tag=http://acme.org/tags|vip"),
    ("Patient", "_profile=http://acme.org/fhir/StructureDefinition/patient-x"),
    ("Observation", "code=http://loinc.org|8480-6"), ("Observation", "value-quantity=gt5"),
    ("Observation", "subject:identifier=http://acme.org/patient|2345"),
    ("Observation", "subject=Patient/p1"), ("Observation", "subject=p1"),
    ("Observation", "subject=http://other.org/fhir/Patient/p1"),
    ("Observation", "subject:Patient.name=peter"),
    ("Patient", "_has:Observation:patient:code=8480-6"),
    ("Appointment", "date=ge2024-03-01"), ("RiskAssessment", "probability=gt0.5"),
    ("ValueSet", "url:below=http://acme.org/fhir/"), ("ValueSet", "url=http://acme.org/x"),
]
STREAMED = ["identifier=http://acme.org/patient|2345", "gender=male",
            "general-practitioner=Practitioner/dr1", "family:exact=Chalmers"]
COMBINED = [
    ("Appointment", "actor=Practitioner/dr1&date=ge2024-01-01&date=lt2024-06-01"),
    ("Patient", "family=chal&birthdate=1974-12-25"),
    ("Patient", "gender=female&_sort=-birthdate"),
    ("Patient", "gender:not=male"), ("Patient", "birthdate:missing=true"),
]


def _scans(plan: list[str]) -> list[str]:
    """Scans of a table or index; reading back a subquery's or CTE's own rows (q, p), or
    the list of matched rids (json_each), is not one."""
    return [line for line in plan if re.match(r"SCAN (?!json_each|\(subquery|[qp]\b)", line)]


@pytest.fixture
async def db(store_kind: str, app: FastAPI, client: httpx.AsyncClient
             ) -> AsyncIterator[sqlite3.Connection]:
    if store_kind != "sqlite":  # FHIRPM_TEST_STORE=mongo (tests.mongo_fixtures)
        pytest.skip("SQLite query plans: this test reads the SQLite file with EXPLAIN")
    await put_all(client, DATA)
    conn = sqlite3.connect(app.state.store.path)
    yield conn
    conn.close()


def _query(app: FastAPI, type_: str, text: str) -> SearchQuery:
    parser = SearchParser(app.state.interactions.repo.registry, base="http://testserver/fhir")
    params = [tuple(p.split("=", 1)) for p in text.split("&")]
    return parser.parse([type_], params, strict=True).query


async def test_single_parameters_use_an_index(app: FastAPI, db: sqlite3.Connection) -> None:
    for type_, text in SINGLE + COMBINED:
        for pinned in (False, True):  # the first page, and the later ones
            plan = explain(db, _query(app, type_, text), pinned=pinned)
            assert not _scans(plan), (type_, text, plan)
            assert any("USING" in line for line in plan), (type_, text, plan)
    for type_, text in SINGLE:  # the index narrows by value, and no type is walked whole
        plan = explain(db, _query(app, type_, text))
        assert not any(line.endswith("(param=?)") for line in plan), (type_, text, plan)
        assert not any("(type=? AND deleted=?)" in line for line in plan), (type_, text, plan)


BEFORE_LEAN = """
DROP INDEX ix_reference_url;
DROP INDEX ix_reference_identifier;
CREATE INDEX ix_string_raw ON ix_string (param, raw, rid);
CREATE INDEX ix_reference_url ON ix_reference (param, url, rid);
CREATE INDEX ix_reference_identifier ON ix_reference (param, id_value, id_system, rid)
"""
LEAN_SERVED = [("Patient", "family:exact=Chalmers"),
               ("Observation", "subject=http://other.org/fhir/Patient/p1"),
               ("Observation", "subject:identifier=http://acme.org/patient|2345")]


async def test_a_database_with_the_earlier_indexes_is_migrated(
        app: FastAPI, db: sqlite3.Connection) -> None:
    """The indexes as they were before `index.LEAN_DDL`, with rows in them: migrating
    drops the raw-string index and keeps only the rows with a URL or an identifier in
    theirs; the searches they served find the same resources through the new ones."""
    def found() -> list[list[str]]:
        return [[v.id for v in run(db, _query(app, type_, text)).matches]
                for type_, text in LEAN_SERVED]

    before = found()
    assert all(before), before
    db.executescript(BEFORE_LEAN)
    db.execute(f"PRAGMA user_version = {schema.MIGRATIONS.index(index.LEAN_DDL)}")
    assert found() == before
    schema.migrate(db)
    indexes = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
    assert "ix_string_raw" not in indexes
    assert "WHERE url IS NOT NULL" in indexes["ix_reference_url"]
    assert "WHERE id_value IS NOT NULL" in indexes["ix_reference_identifier"]
    assert found() == before
    for type_, text in LEAN_SERVED:
        plan = explain(db, _query(app, type_, text))
        assert not _scans(plan) and not any(line.endswith("(param=?)") for line in plan), plan


async def test_equalities_stream_without_sorting(app: FastAPI, db: sqlite3.Connection) -> None:
    for text in STREAMED:
        plan = explain(db, _query(app, "Patient", text))
        assert not any("TEMP B-TREE" in line for line in plan), (text, plan)
