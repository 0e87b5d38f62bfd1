"""Search on MongoDB returns exactly what the in-memory oracle (`search.match`) returns, in
the same order, through every page, with the same totals and includes: the search issue's
property test (generated resources and queries) run against the MongoDB store."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient

from fhirpm.search.match import MemoryIndex
from fhirpm.search.query import SearchQuery
from fhirpm.storage.mongo import MongoResourceStore
from tests.mongo_fixtures import with_database
from tests.search.test_oracle_property import _all_pages, _load, datasets, queries

DATABASE = "fhirpm_search_oracle"


async def _check(url: str, writes: list, qs: list[SearchQuery]) -> None:
    store = MongoResourceStore(url)
    await store.open()
    try:
        oracle = MemoryIndex()
        await _load(store, oracle, writes)  # type: ignore[arg-type]
        for query in qs:
            expected, expected_included = oracle.search(query)
            got, total = await _all_pages(store, query)  # type: ignore[arg-type]
            assert got == expected, query
            assert total == len(expected)
            if query.include or query.revinclude:
                result = await store.search(query)
                assert [(v.type, v.id) for v in result.included] == expected_included, query
    finally:
        await store.close()
        client: AsyncMongoClient = AsyncMongoClient(url)
        db = client.get_default_database()
        for name in await db.list_collection_names():
            await db[name].delete_many({})  # keep the indexes: the next example reuses them
        await client.close()


def test_mongo_returns_what_the_oracle_returns(mongo_server_url: str) -> None:
    url = with_database(mongo_server_url, DATABASE)

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(datasets(), st.lists(queries(), min_size=1, max_size=4))
    def check(writes: list, qs: list[SearchQuery]) -> None:
        asyncio.run(_check(url, writes, qs))

    try:
        check()
    finally:
        from pymongo import MongoClient

        with MongoClient(mongo_server_url) as client:
            client.drop_database(DATABASE)
