"""Contract: units of work are atomic, see their own writes, and guard versions and keys."""

from __future__ import annotations

import asyncio

import pytest

from fhirpm.search.query import SearchQuery
from fhirpm.storage.port import (
    HistoryQuery,
    ResourceStore,
    StoreError,
    UniqueKeyTaken,
    VersionConflict,
)
from tests.contract.conftest import Opener
from tests.contract.stores import version


class Boom(Exception):
    pass


async def test_a_failing_unit_leaves_nothing(store: ResourceStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "kept", 1), [], expected_version=0)
    with pytest.raises(Boom):
        async with store.unit_of_work() as uow:
            await uow.put(version("Patient", "a", 1), [], expected_version=0,
                          unique_keys=["Patient?identifier=x|1"])
            await uow.put(version("Patient", "kept", 2), [], expected_version=1)
            await uow.put(version("Observation", "b", 1), [], expected_version=0)
            raise Boom
    assert await store.read("Patient", "a") is None
    assert await store.read("Observation", "b") is None
    assert (await store.read("Patient", "kept")).version == 1
    assert await store.history_count(HistoryQuery()) == 1
    assert len(await store.changes(0, 10)) == 1
    # the key the failed unit claimed is free again
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "c", 1), [], expected_version=0,
                      unique_keys=["Patient?identifier=x|1"])


async def test_a_cancelled_unit_leaves_nothing(store: ResourceStore) -> None:
    started = asyncio.Event()

    async def unit() -> None:
        async with store.unit_of_work() as uow:
            await uow.put(version("Patient", "a", 1), [], expected_version=0)
            started.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(unit())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.read("Patient", "a") is None
    async with store.unit_of_work() as uow:  # the store is still usable
        await uow.put(version("Patient", "a", 1), [], expected_version=0)
    assert (await store.read("Patient", "a")).version == 1


async def test_a_unit_sees_its_own_writes(store: ResourceStore) -> None:
    async with store.unit_of_work() as uow:
        assert await uow.current("Patient", "a") is None
        await uow.put(version("Patient", "a", 1), [], expected_version=0)
        mine = await uow.current("Patient", "a")
        assert mine is not None and mine.version == 1
        await uow.put(version("Patient", "a", 2), [], expected_version=1)
        assert (await uow.current("Patient", "a")).version == 2
        found = await uow.search(SearchQuery(types=("Patient",), count=10, total="accurate"))
        assert [v.id for v in found.matches] == ["a"] and found.total == 1
        assert await store.read("Patient", "a") is None  # not committed yet
    assert [(v.version, v.method) for v in await store.history(
        HistoryQuery("Patient", "a", count=10))] == [(2, "PUT"), (1, "POST")]


async def test_a_stale_put_fails_the_unit_by_its_commit_at_the_latest(
        store: ResourceStore) -> None:
    """VersionConflict may come from the put itself or be deferred to the commit (an adapter
    may buffer writes); either way it reaches the caller and nothing of the unit stays."""
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "x", 1), [], expected_version=0)
    with pytest.raises(VersionConflict):
        async with store.unit_of_work() as uow:
            await uow.put(version("Patient", "a", 1), [], expected_version=0)
            await uow.put(version("Patient", "x", 3), [], expected_version=2)
            await uow.put(version("Patient", "b", 1), [], expected_version=0)
    assert await store.read("Patient", "a") is None
    assert await store.read("Patient", "b") is None
    assert (await store.read("Patient", "x")).version == 1
    assert await store.history_count(HistoryQuery()) == 1


async def test_unique_keys(store: ResourceStore) -> None:
    key = "Patient?identifier=http://example.org/mrn|12345"
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "first", 1), [], expected_version=0,
                      unique_keys=[key])
    with pytest.raises(UniqueKeyTaken) as taken:
        async with store.unit_of_work() as uow:
            await uow.put(version("Patient", "second", 1), [], expected_version=0,
                          unique_keys=[key])
    assert taken.value.key == key and taken.value.holder == ("Patient", "first")
    assert await store.read("Patient", "second") is None
    # the holder itself may claim its key again with a new version
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "first", 2), [], expected_version=1,
                      unique_keys=[key])
    # a deletion releases the key
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "first", 3, method="DELETE"), [], expected_version=2)
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "second", 1), [], expected_version=0,
                      unique_keys=[key])
    assert (await store.read("Patient", "second")).version == 1


async def test_racing_conditional_creates_make_exactly_one(open_store: Opener) -> None:
    """Ten writers on two store instances race to create with the same match key."""
    stores = [await open_store(), await open_store()]
    key = "Patient?identifier=urn:mrn|race"

    async def create(n: int) -> str:
        try:
            async with stores[n % 2].unit_of_work() as uow:
                await uow.put(version("Patient", f"r{n}", 1), [], expected_version=0,
                              unique_keys=[key])
            return "created"
        except (UniqueKeyTaken, VersionConflict):
            return "refused"

    outcomes = await asyncio.gather(*(create(n) for n in range(10)))
    assert outcomes.count("created") == 1
    live = await stores[0].search(SearchQuery(types=("Patient",), count=20, total="accurate"))
    assert live.total == 1


async def test_racing_updates_of_one_resource_never_lose_a_version(open_store: Opener) -> None:
    """Writers on two instances read the current version and write the next one, retrying
    on conflict: every increment lands exactly once."""
    stores = [await open_store(), await open_store()]
    async with stores[0].unit_of_work() as uow:
        await uow.put(version("Patient", "counter", 1), [], expected_version=0)

    async def bump(n: int) -> int:
        conflicts = 0
        while True:
            try:
                async with stores[n % 2].unit_of_work() as uow:
                    current = await uow.current("Patient", "counter")
                    await uow.put(version("Patient", "counter", current.version + 1), [],
                                  expected_version=current.version)
                return conflicts
            except (VersionConflict, StoreError):
                conflicts += 1

    await asyncio.gather(*(bump(n) for n in range(6)))
    assert (await stores[1].read("Patient", "counter")).version == 7
    assert await stores[1].history_count(HistoryQuery("Patient", "counter")) == 7


async def test_a_put_refused_for_a_taken_key_leaves_nothing_behind(
        store: ResourceStore) -> None:
    """A caller may catch UniqueKeyTaken (conditional create: 'then return the holder') and
    go on with the unit; the refused put must not have written anything."""
    key = "Patient?identifier=urn:mrn|7"
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "holder", 1), [], expected_version=0,
                      unique_keys=[key])
    async with store.unit_of_work() as uow:
        with pytest.raises(UniqueKeyTaken):
            await uow.put(version("Patient", "dup", 1), [], expected_version=0,
                          unique_keys=[key])
        await uow.put(version("Patient", "other", 1), [], expected_version=0)
    assert await store.read("Patient", "dup") is None
    assert await store.history_count(HistoryQuery()) == 2
