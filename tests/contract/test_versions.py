"""Contract: versions, tombstones, reads of stored bytes, optimistic version checks."""

from __future__ import annotations

import pytest

from fhirpm.search.query import SearchQuery
from fhirpm.storage.port import ResourceStore, VersionConflict
from tests.contract.stores import version

DECIMAL_BODY = ('{"resourceType":"Observation","id":"o1","meta":{"versionId":"1"},'
                '"valueQuantity":{"value":72.50,"unit":"kg"},"note":[{"text":"Zoë ✓"}]}'
                ).encode()


async def put(store: ResourceStore, v, expected: int, keys=()) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(v, [], expected_version=expected, unique_keys=keys)


async def test_read_serves_the_stored_bytes_exactly(store: ResourceStore) -> None:
    await put(store, version("Observation", "o1", 1, DECIMAL_BODY), 0)
    found = await store.read("Observation", "o1")
    assert found is not None
    assert found.body == DECIMAL_BODY
    assert (found.type, found.id, found.version, found.method) == ("Observation", "o1", 1,
                                                                   "POST")
    assert found.seq > 0 and not found.deleted


async def test_new_versions_and_vread(store: ResourceStore) -> None:
    await put(store, version("Patient", "p", 1, lu="2024-01-01T00:00:00.000000Z"), 0)
    await put(store, version("Patient", "p", 2, lu="2024-01-02T00:00:00.000000Z"), 1)
    current = await store.read("Patient", "p")
    assert current is not None and current.version == 2
    assert current.last_updated == "2024-01-02T00:00:00.000000Z"
    first = await store.vread("Patient", "p", 1)
    assert first is not None and first.version == 1 and b'"versionId":"1"' in first.body
    assert (await store.vread("Patient", "p", 2)).body == current.body
    assert await store.vread("Patient", "p", 3) is None
    assert first.seq < current.seq


async def test_unknown_resources(store: ResourceStore) -> None:
    assert await store.read("Patient", "nope") is None
    assert await store.vread("Patient", "nope", 1) is None
    assert await store.read("Basic", "nope") is None  # a type never written


@pytest.mark.parametrize("expected", [1, 5])
async def test_create_with_wrong_expected_version_conflicts(store: ResourceStore,
                                                            expected: int) -> None:
    with pytest.raises(VersionConflict):
        await put(store, version("Patient", "p", 1), expected)
    assert await store.read("Patient", "p") is None


@pytest.mark.parametrize("expected", [0, 2])
async def test_update_with_stale_expected_version_conflicts(store: ResourceStore,
                                                            expected: int) -> None:
    await put(store, version("Patient", "p", 1), 0)
    with pytest.raises(VersionConflict):
        await put(store, version("Patient", "p", 2), expected)
    assert (await store.read("Patient", "p")).version == 1


async def test_tombstone_is_a_version(store: ResourceStore) -> None:
    await put(store, version("Patient", "p", 1), 0)
    await put(store, version("Patient", "p", 2, method="DELETE"), 1)
    gone = await store.read("Patient", "p")
    assert gone is not None and gone.deleted and gone.body == b"" and gone.version == 2
    assert (await store.vread("Patient", "p", 2)).deleted
    assert not (await store.vread("Patient", "p", 1)).deleted
    # re-created after deletion: the next version
    await put(store, version("Patient", "p", 3), 2)
    back = await store.read("Patient", "p")
    assert back.version == 3 and not back.deleted


async def test_search_without_parameters_lists_live_resources(store: ResourceStore) -> None:
    for i in range(3):
        await put(store, version("Patient", f"p{i}", 1), 0)
    await put(store, version("Organization", "o", 1), 0)
    await put(store, version("Patient", "p1", 2, method="DELETE"), 1)
    result = await store.search(SearchQuery(types=("Patient",), count=10, total="accurate"))
    assert sorted(v.id for v in result.matches) == ["p0", "p2"]
    assert result.total == 2 and not result.has_more
    page = await store.search(SearchQuery(types=("Patient",), count=1))
    assert len(page.matches) == 1 and page.has_more
    both = await store.search(SearchQuery(types=("Patient", "Organization"), count=10,
                                          total="accurate"))
    assert sorted((v.type, v.id) for v in both.matches) == [
        ("Organization", "o"), ("Patient", "p0"), ("Patient", "p2")]
    assert both.total == 3
    every = await store.search(SearchQuery(types=(), count=10, total="accurate"))
    assert every.total == 3
    matched = {(v.type, v.id): v for v in every.matches}
    assert matched[("Patient", "p0")].body == (await store.read("Patient", "p0")).body
