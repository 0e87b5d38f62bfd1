"""Identity lookups in one statement (fhirpm.storage.sqlite.identities): for every query it
takes, the matches are exactly the general search's; every other query, and one that finds
more than its count, is answered by the general search itself."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.search.query import AnyOf, Param, SearchQuery, StringPred, TokenPred
from fhirpm.storage.sqlite import identities, search
from tests.search.helpers import put_all

MRN, NPI = "urn:example:mrn", "http://hl7.org/fhir/sid/us-npi"
DATA = [
    {"resourceType": "Patient", "id": "a", "identifier": [{"system": MRN, "value": "1"},
                                                          {"value": "loose"}]},
    {"resourceType": "Patient", "id": "b", "identifier": [{"system": MRN, "value": "2"},
                                                          {"system": NPI, "value": "2"}]},
    {"resourceType": "Patient", "id": "c", "identifier": [{"system": NPI, "value": "1"}]},
    {"resourceType": "Patient", "id": "gone", "identifier": [{"system": MRN, "value": "9"}]},
    {"resourceType": "Practitioner", "id": "a", "identifier": [{"system": MRN, "value": "1"}]},
]


def ident(code: str, system: str | None = None) -> Param:
    return Param("identifier", "token", (TokenPred(code=code, system=system),))


def ids(*codes: str) -> Param:
    return Param("_id", "token", tuple(TokenPred(code=c) for c in codes))


def lookup(type_: str, clause: object, count: int = 10) -> SearchQuery:
    return SearchQuery(types=(type_,), where=(clause,), count=count, total="none")  # type: ignore[arg-type]


LOOKUPS = [
    lookup("Patient", ident("1", MRN)), lookup("Patient", ident("1")),  # any system
    lookup("Patient", ident("2")),  # one resource, two identifiers with that value
    lookup("Patient", ident("loose")), lookup("Patient", ident("nobody", MRN)),
    lookup("Patient", ident("9", MRN)),  # deleted: no match
    lookup("Patient", ids("a", "c", "gone", "nobody")),
    lookup("Patient", AnyOf((ids("c"), ident("1", MRN), ident("2", NPI)))),
    lookup("Practitioner", AnyOf((ids("a"), ident("1", MRN)))),  # one resource, found twice
    lookup("Patient", Param("identifier", "token", (TokenPred(code="1", system=MRN),
                                                    TokenPred(code="2", system=MRN)))),
]
OTHERS = [  # not identity lookups: the general search answers
    lookup("Patient", Param("name", "string", (StringPred("x"),))),
    lookup("Patient", Param("identifier", "token", (TokenPred(code=None, system=MRN),))),
    SearchQuery(types=("Patient",), where=(ident("1"),), count=10, total="accurate"),
    lookup("Patient", ident("1"), count=1),  # finds two: more than its count
]


@pytest.fixture
async def db(store_kind: str, app: FastAPI, client: httpx.AsyncClient
             ) -> AsyncIterator[sqlite3.Connection]:
    if store_kind != "sqlite":
        pytest.skip("the SQLite adapter's own lookups")
    await put_all(client, DATA)
    assert (await client.delete("Patient/gone")).status_code in (200, 204)
    conn = sqlite3.connect(app.state.store.path)
    yield conn
    conn.close()


def _found(result: object) -> list[tuple[str, str, int]]:
    return [(v.type, v.id, v.version) for v in result.matches]  # type: ignore[attr-defined]


async def test_lookups_find_what_the_general_search_finds(db: sqlite3.Connection) -> None:
    together = identities.run_many(db, LOOKUPS)
    expected = [_found(search.run(db, q)) for q in LOOKUPS]
    assert [_found(r) for r in together] == expected
    assert expected[0] == [("Patient", "a", 1)] and expected[1] == [("Patient", "a", 1),
                                                                    ("Patient", "c", 1)]
    assert expected[5] == [] and [i for _, i, _ in expected[6]] == ["a", "c"]
    assert [i for _, i, _ in expected[7]] == ["a", "b", "c"]
    assert expected[8] == [("Practitioner", "a", 1)]


async def test_other_queries_are_answered_by_the_general_search(
        db: sqlite3.Connection) -> None:
    for q in OTHERS:
        assert identities._probes(q) is None or q.count == 1
        (got,) = identities.run_many(db, [q])
        general = search.run(db, q)
        assert _found(got) == _found(general)
        assert (got.total, got.has_more, got.next_cursor is not None) == (
            general.total, general.has_more, general.next_cursor is not None)
    mixed = identities.run_many(db, [OTHERS[0], LOOKUPS[7], OTHERS[3]])
    assert [_found(r) for r in mixed] == [_found(search.run(db, q))
                                          for q in (OTHERS[0], LOOKUPS[7], OTHERS[3])]
    assert mixed[2].has_more  # two matches, count 1: paged by the general search
