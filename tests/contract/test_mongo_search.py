"""MongoDB search beyond the oracle property test: hostile values stay literal, cursors
cannot smuggle operators, chains and _has nest, and (on a real MongoDB) indexed parameters
are answered from an index."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest
from pymongo import AsyncMongoClient

from fhirpm.errors import FhirError
from fhirpm.search.query import (
    Chain,
    Has,
    Param,
    RefPred,
    SearchQuery,
    SortKey,
    StringPred,
    TokenPred,
    TokenTextPred,
)
from fhirpm.search.values import IndexEntry, ReferenceValue, StringValue, TokenValue
from fhirpm.storage.mongo import MongoResourceStore
from fhirpm.storage.mongo.search import type_pipeline
from tests.contract.stores import version


@pytest.fixture
async def store(mongo_url: str) -> AsyncIterator[MongoResourceStore]:
    opened = MongoResourceStore(mongo_url)
    await opened.open()
    yield opened
    await opened.close()


async def put(store: MongoResourceStore, type: str, id: str, entries: list) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(version(type, id, 1), entries, expected_version=0)


def ids(result) -> list[str]:
    return [v.id for v in result.matches]


HOSTILE = ['{"$ne": 1}', "$where", "a.*", ".*", "^", "(", "$gt", "\\", "[a-z]+"]


@pytest.mark.parametrize("value", HOSTILE)
async def test_search_values_are_literals(store: MongoResourceStore, value: str) -> None:
    await put(store, "Patient", "plain", [IndexEntry("name", StringValue("plain", "plain")),
                                          IndexEntry("identifier", TokenValue("s", "plain",
                                                                              "plain text"))])
    await put(store, "Patient", "odd", [IndexEntry("name", StringValue(value, value)),
                                        IndexEntry("identifier", TokenValue("s", value, value))])
    for pred, code in [(StringPred(value), "name"), (StringPred(value, "exact"), "name"),
                       (StringPred(value, "contains"), "name"),
                       (TokenPred(code=value), "identifier"),
                       (TokenTextPred(value), "identifier")]:
        found = await store.search(SearchQuery(("Patient",), (Param(code, "x", (pred,)),),
                                               count=10))
        assert ids(found) == ["odd"], pred
    by_id = await store.search(SearchQuery(("Patient",), (Param("_id", "token",
                                                                (TokenPred(code=value),)),)))
    assert ids(by_id) == []


@pytest.mark.parametrize("position", [[{"$gt": ""}, "Patient", "x"], [0, {"$ne": 1}, "x"],
                                      [0, "Patient", ["x"]], "nope"])
async def test_a_forged_cursor_is_refused(store: MongoResourceStore, position) -> None:
    token = base64.urlsafe_b64encode(orjson.dumps([0, None, False, position])).decode()
    with pytest.raises(FhirError) as refused:
        await store.search(SearchQuery(("Patient",), cursor=token))
    assert refused.value.status == 400


async def test_chains_and_has_nest(store: MongoResourceStore) -> None:
    await put(store, "Organization", "org", [IndexEntry("name", StringValue("acme", "Acme"))])
    await put(store, "Practitioner", "dr", [
        IndexEntry("organization", ReferenceValue("Organization", "org"))])
    await put(store, "Patient", "p1", [
        IndexEntry("general-practitioner", ReferenceValue("Practitioner", "dr"))])
    await put(store, "Patient", "p2", [])
    await put(store, "Observation", "o1", [IndexEntry("subject", ReferenceValue("Patient", "p1"))])
    await put(store, "Observation", "o2", [IndexEntry("subject", ReferenceValue("Patient", "p2"))])
    acme = Param("name", "string", (StringPred("acm"),))
    # Observation?subject:Patient.general-practitioner:Practitioner.organization.name=acm
    chain = Chain("subject", (("Patient", Chain("general-practitioner", (
        ("Practitioner", Chain("organization", (("Organization", acme),))),))),))
    assert ids(await store.search(SearchQuery(("Observation",), (chain,)))) == ["o1"]
    # Organization?_has:Practitioner:organization:_has:Patient:general-practitioner:_id=p1
    has = Has("Practitioner", "organization", Has("Patient", "general-practitioner", Param(
        "_id", "token", (TokenPred(code="p1"),))))
    assert ids(await store.search(SearchQuery(("Organization",), (has,)))) == ["org"]
    miss = Has("Practitioner", "organization", Has("Patient", "general-practitioner", Param(
        "_id", "token", (TokenPred(code="p2"),))))
    assert ids(await store.search(SearchQuery(("Organization",), (miss,)))) == []


async def test_sort_and_pages_across_types(store: MongoResourceStore) -> None:
    for n, type in enumerate(["Patient", "Practitioner", "Patient", "Practitioner"]):
        await put(store, type, f"r{n}", [IndexEntry("name", StringValue(f"n{3 - n}", "x"))])
    query = SearchQuery(("Patient", "Practitioner"), sort=(SortKey("name", "string"),),
                        count=3, total="accurate")
    first = await store.search(query)
    assert ids(first) == ["r3", "r2", "r1"] and first.total == 4
    second = await store.search(SearchQuery(query.types, sort=query.sort, count=3,
                                            cursor=first.next_cursor))
    assert ids(second) == ["r0"] and second.next_cursor is None
    back = await store.search(SearchQuery(query.types, sort=query.sort, count=3,
                                          cursor=second.prev_cursor))
    assert ids(back) == ["r3", "r2", "r1"]


async def test_indexed_parameters_use_an_index(store: MongoResourceStore) -> None:
    """Only where the server explains its plans the way MongoDB does (a real server)."""
    await put(store, "Patient", "p", [IndexEntry("identifier", TokenValue("s", "1"))])
    query = SearchQuery(("Patient",), (Param("identifier", "token", (TokenPred("1", "s"),)),))
    stages = type_pipeline(query, "Patient", 2**62)
    client: AsyncMongoClient = AsyncMongoClient(store.url)
    try:
        db = client.get_default_database()
        plan = await db.command({"explain": {"aggregate": "Patient", "pipeline": stages,
                                             "cursor": {}}, "verbosity": "queryPlanner"})
    finally:
        await client.close()
    text = orjson.dumps(plan).decode()
    if "winningPlan" not in text:
        pytest.skip("this server does not explain plans like MongoDB (the emulator)")
    assert "IXSCAN" in text and "ix_tok_code" in text
    assert "COLLSCAN" not in text


async def test_search_inside_a_unit_sees_its_own_writes_through_a_chain(
        store: MongoResourceStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "p", 1), [IndexEntry("name", StringValue("zed", "Zed"))],
                      expected_version=0)
        await uow.put(version("Observation", "o", 1), [
            IndexEntry("subject", ReferenceValue("Patient", "p"))], expected_version=0)
        chain = Chain("subject", (("Patient", Param("name", "string", (StringPred("ze"),))),))
        found = await uow.search(SearchQuery(("Observation",), (chain,)))
        assert ids(found) == ["o"]
    assert ids(await store.search(SearchQuery(("Observation",), (Param(
        "subject", "reference", (RefPred("Patient", "p"),)),)))) == ["o"]
