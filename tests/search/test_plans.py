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
from fhirpm.storage.sqlite.search import explain
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


async def test_equalities_stream_without_sorting(app: FastAPI, db: sqlite3.Connection) -> None:
    for text in STREAMED:
        plan = explain(db, _query(app, "Patient", text))
        assert not any("TEMP B-TREE" in line for line in plan), (text, plan)
