"""What only the MongoDB adapter has: start-up (indexes, the transaction probe, refusal),
replays after lost races, the mode without transactions, and type names as namespaces.

Runs against FHIRPM_TEST_MONGODB_URL when set, else the mongoeco emulator.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from fhirpm.search.values import IndexEntry, TokenValue
from fhirpm.storage.mongo import MongoResourceStore, schema
from fhirpm.storage.mongo.txn import refuse_without_transactions
from fhirpm.storage.port import HistoryQuery, StoreError, VersionConflict
from tests.contract.stores import stored_index, version


@pytest.fixture
async def stores(mongo_url: str) -> AsyncIterator[list[MongoResourceStore]]:
    """Two stores on one database: two server processes as far as the data goes."""
    opened = [MongoResourceStore(mongo_url), MongoResourceStore(mongo_url)]
    for store in opened:
        await store.open()
    yield opened
    for store in opened:
        await store.close()


@pytest.fixture
async def raw(mongo_url: str) -> AsyncIterator:
    client: AsyncMongoClient = AsyncMongoClient(mongo_url)
    yield client.get_default_database()
    await client.close()


async def test_open_creates_indexes_idempotently(stores: list[MongoResourceStore],
                                                 raw) -> None:
    store = stores[0]
    assert store.transactions is True  # the probe ran a real transaction
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "p", 1), [], expected_version=0)
    again = MongoResourceStore(store.url)
    await again.open()  # a restart on existing data changes nothing
    await again.close()
    names = {ix["name"] async for ix in await raw["Patient"].list_indexes()}
    assert {opts["name"] for _, opts in schema.RESOURCE_INDEXES} <= names
    history = {ix["name"] async for ix in await raw[schema.HISTORY].list_indexes()}
    assert {"version", "type_seq", "last_updated"} <= history
    documents = {ix["name"]: ix async for ix in await raw[schema.DOCUMENTS].list_indexes()}
    assert documents["key"]["unique"] is True
    assert documents["expiry"]["expireAfterSeconds"] == 0


async def test_history_rejects_a_duplicate_version(raw, stores) -> None:
    """The history's unique (type, id, version) index backs the version checks."""
    async with stores[0].unit_of_work() as uow:
        await uow.put(version("Patient", "p", 1), [], expected_version=0)
    doc = await raw[schema.HISTORY].find_one({"t": "Patient", "i": "p"})
    doc["_id"] = 10_000
    with pytest.raises(DuplicateKeyError):
        await raw[schema.HISTORY].insert_one(doc)


async def test_a_unit_that_lost_a_race_is_replayed(stores: list[MongoResourceStore]) -> None:
    """A's transaction is open when B commits: A's commit cannot take the counter as it
    was, so the server refuses (at the write on MongoDB, at the commit on others); A is
    replayed in a new transaction and commits after B, with larger seqs."""
    first, second = stores
    async with first.unit_of_work() as a:
        await a.put(version("Patient", "a", 1), [], expected_version=0)
        async with second.unit_of_work() as b:
            await b.put(version("Patient", "b", 1), [], expected_version=0)
    log = await first.changes(0, 10)
    assert [v.id for v in log] == ["b", "a"]
    assert log[0].seq < log[1].seq
    assert (await first.read("Patient", "a")).seq == log[1].seq


async def test_a_replay_that_finds_a_changed_resource_conflicts(
        stores: list[MongoResourceStore]) -> None:
    first, second = stores
    async with first.unit_of_work() as uow:
        await uow.put(version("Patient", "x", 1), [], expected_version=0)
    with pytest.raises(VersionConflict):
        async with first.unit_of_work() as a:
            current = await a.current("Patient", "x")
            await a.put(version("Patient", "x", 2, body=b'{"from":"a"}'), [],
                        expected_version=current.version)
            async with second.unit_of_work() as b:
                await b.put(version("Patient", "x", 2, body=b'{"from":"b"}'), [],
                            expected_version=1)
    winner = await first.read("Patient", "x")
    assert winner.version == 2 and winner.body == b'{"from":"b"}'
    assert await first.history_count(HistoryQuery("Patient", "x")) == 2


async def test_a_replay_validates_what_the_unit_read(stores: list[MongoResourceStore]) -> None:
    """A read a unit based its decision on counts like a write: if it changed meanwhile,
    the unit fails instead of committing on stale knowledge."""
    first, second = stores
    with pytest.raises(VersionConflict):
        async with first.unit_of_work() as a:
            assert await a.current("Patient", "y") is None  # "create only if absent"
            await a.put(version("Observation", "o", 1), [], expected_version=0)
            async with second.unit_of_work() as b:
                await b.put(version("Patient", "y", 1), [], expected_version=0)
    assert await first.read("Observation", "o") is None


async def test_without_transactions_a_failing_unit_writes_nothing(mongo_url: str) -> None:
    store = MongoResourceStore(mongo_url, use_transactions=False)
    await store.open()
    try:
        assert store.transactions is False
        with pytest.raises(RuntimeError):
            async with store.unit_of_work() as uow:
                await uow.put(version("Patient", "a", 1), [], expected_version=0)
                assert (await uow.current("Patient", "a")).version == 1
                raise RuntimeError("validation failed on the next entry")
        assert await store.read("Patient", "a") is None
        async with store.unit_of_work() as uow:
            await uow.put(version("Patient", "a", 1), [], expected_version=0)
            await uow.put(version("Patient", "a", 2), [], expected_version=1)
            with pytest.raises(VersionConflict):
                await uow.put(version("Patient", "a", 3), [], expected_version=1)
        assert (await store.read("Patient", "a")).version == 2
        assert [v.version for v in await store.changes(0, 10)] == [1, 2]
        gender = [IndexEntry("gender", TokenValue(None, "other"))]
        with pytest.raises(RuntimeError):
            async with store.unit_of_work() as uow:
                assert await uow.reindex("Patient", "a", 2, gender) is True
                raise RuntimeError("the job's batch failed")
        assert await stored_index(store, "Patient", "a") == []
        async with store.unit_of_work() as uow:
            assert await uow.reindex("Patient", "a", 1, gender) is False  # not current
            assert await uow.reindex("Patient", "a", 2, gender) is True
        assert await stored_index(store, "Patient", "a") == gender
    finally:
        await store.close()


async def test_types_that_are_not_type_names_are_refused(stores) -> None:
    for bad in ("$cmd", "system.users", "history", "Patient.$where", "", "Pat ient"):
        with pytest.raises(ValueError):
            async with stores[0].unit_of_work() as uow:
                await uow.put(_typed(bad), [], expected_version=0)


def _typed(type: str):
    from fhirpm.storage.port import ResourceVersion

    return ResourceVersion(type, "p", 1, "2024-01-01T00:00:00.000000Z", "POST", b"{}")


async def test_non_string_ids_and_keys_are_refused(stores) -> None:
    from fhirpm.storage.port import ResourceVersion

    async with stores[0].unit_of_work() as uow:
        with pytest.raises(TypeError):
            await uow.put(ResourceVersion("Patient", {"$ne": 1}, 1, "x", "POST", b"{}"), [],
                          expected_version=0)
        with pytest.raises(TypeError):
            await uow.put(version("Patient", "p", 1), [], expected_version=0,
                          unique_keys=[{"$gt": ""}])
    assert await stores[0].read("Patient", {"$ne": 1}) is None
    with pytest.raises(TypeError):
        await stores[0].doc_get("c", {"$ne": 1})


@contextmanager
def _refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound here and never
    listening, so no other process can take it (a port bound and closed again could be
    handed to another process's server before the test connects to it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def test_an_unreachable_server_is_a_clear_error_without_credentials() -> None:
    with _refusing_port() as port, pytest.raises(StoreError) as failed:
        url = (f"mongodb://fhir:s3cret@127.0.0.1:{port}/fhirpm"
               "?serverSelectionTimeoutMS=300&directConnection=true")
        await MongoResourceStore(url).open()
    message = str(failed.value)
    assert "unreachable" in message and "127.0.0.1" in message
    assert "s3cret" not in message and "fhir:" not in message


def test_the_refusal_says_how_to_fix_it() -> None:
    message = str(refuse_without_transactions(
        "Transaction numbers are only allowed on a replica set member or mongos",
        "mongodb://db.example:27017/fhirpm"))
    assert "replica set" in message and "rs.initiate()" in message
    assert "FHIRPM_MONGO_ALLOW_NO_TRANSACTIONS" in message
    assert "db.example" in message


def test_urls_must_be_mongodb_urls() -> None:
    with pytest.raises(ValueError):
        MongoResourceStore("sqlite:///x.db")
