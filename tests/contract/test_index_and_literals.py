"""Contract: index entries are kept with the current version; hostile strings stay literal.

Ids, keys and values that look like query operators (`{"$ne": 1}`, `$where`, `a.$gt`) must
be stored and found as the plain strings they are, never interpreted by the store.
"""

from __future__ import annotations

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
from fhirpm.storage.port import HistoryQuery, ResourceStore, UniqueKeyTaken
from tests.contract.stores import stored_index, version

ENTRIES = [
    IndexEntry("name", StringValue("zoe", "Zoë")),
    IndexEntry("name", StringValue("{\"$ne\": 1}", "{\"$ne\": 1}")),
    IndexEntry("identifier", TokenValue("http://example.org/mrn", "12345", "mrn")),
    IndexEntry("gender", TokenValue(None, "female")),
    IndexEntry("general-practitioner", ReferenceValue("Practitioner", "pr1")),
    IndexEntry("link", ReferenceValue(None, None, "http://other.org/Patient/9", "2")),
    IndexEntry("organization", ReferenceValue(None, None, None, None,
                                              TokenValue("urn:sys", "org-7"))),
    IndexEntry("birthdate", DateValue(157766400000000, 157852799999999)),
    IndexEntry("length", NumberValue(72.5, 72.45, 72.55)),
    IndexEntry("weight", QuantityValue(72.5, 72.45, 72.55, "http://unitsofmeasure.org", "kg",
                                       "kg")),
    IndexEntry("url", UriValue("http://example.org/fhir/ValueSet/x")),
]


def key_of(entry: IndexEntry) -> tuple:
    return (entry.param, type(entry.value).__name__, repr(entry.value))


async def test_index_entries_are_persisted_and_replaced(store: ResourceStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "p", 1), ENTRIES, expected_version=0)
    assert sorted(map(key_of, await stored_index(store, "Patient", "p"))) == sorted(
        map(key_of, ENTRIES))
    second = [IndexEntry("gender", TokenValue(None, "male"))]
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "p", 2), second, expected_version=1)
    assert list(map(key_of, await stored_index(store, "Patient", "p"))) == list(
        map(key_of, second))
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "p", 3, method="DELETE"), [], expected_version=2)
    assert await stored_index(store, "Patient", "p") == []


async def test_reindex_replaces_the_values_of_a_live_current_version_only(
        store: ResourceStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "p", 1), ENTRIES[:2], expected_version=0)
        await uow.put(version("Patient", "gone", 1), ENTRIES[:2], expected_version=0)
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "gone", 2, method="DELETE"), [], expected_version=1)
    fresh = [IndexEntry("gender", TokenValue(None, "other"))]
    async with store.unit_of_work() as uow:
        assert await uow.reindex("Patient", "p", 2, fresh) is False  # not its version
        assert await uow.reindex("Patient", "gone", 2, fresh) is False  # deleted
        assert await uow.reindex("Patient", "nobody", 1, fresh) is False
        assert await uow.reindex("Observation", "p", 1, fresh) is False
        assert await uow.reindex("Patient", "p", 1, fresh) is True
    assert list(map(key_of, await stored_index(store, "Patient", "p"))) == list(
        map(key_of, fresh))
    assert await stored_index(store, "Patient", "gone") == []
    assert (await store.read("Patient", "p")).version == 1  # no new version
    assert await store.history_count(HistoryQuery()) == 3
    with pytest.raises(ZeroDivisionError):  # a failing unit leaves the old values
        async with store.unit_of_work() as uow:
            assert await uow.reindex("Patient", "p", 1, ENTRIES) is True
            raise ZeroDivisionError
    assert list(map(key_of, await stored_index(store, "Patient", "p"))) == list(
        map(key_of, fresh))


HOSTILE = ["$where", "a.$gt", '{"$ne": 1}', "$ne", "x.y", "..", "$", "_id", "\u0000a",
           "${x}", "this.constructor"]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_ids_and_keys_are_literals(store: ResourceStore, hostile: str) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "plain", 1), [], expected_version=0,
                      unique_keys=["plain-key"])
        await uow.put(version("Patient", hostile, 1, body=b'{"resourceType":"Patient"}'), [],
                      expected_version=0, unique_keys=[hostile])
    found = await store.read("Patient", hostile)
    assert found is not None and found.id == hostile
    assert (await store.vread("Patient", hostile, 1)).id == hostile
    assert [v.id for v in await store.history(HistoryQuery("Patient", hostile, count=5))] == [
        hostile]
    assert await store.read("Patient", hostile + "x") is None
    with pytest.raises(UniqueKeyTaken) as taken:
        async with store.unit_of_work() as uow:
            await uow.put(version("Patient", "other", 1), [], expected_version=0,
                          unique_keys=[hostile])
    assert taken.value.holder == ("Patient", hostile)
    # documents: collection, key and prefix are literals too
    await store.doc_put(hostile, hostile, b"v")
    assert (await store.doc_get(hostile, hostile)).body == b"v"
    assert [d.key for d in await store.doc_list(hostile, hostile)] == [hostile]
    assert await store.doc_get(hostile, "plain") is None
    await store.set_cursor(hostile, 3)
    assert await store.get_cursor(hostile) == 3


@pytest.mark.parametrize("hostile", ["$cmd", "system.users", "Patient.$where", "", "$where",
                                     "history", "counters"])
async def test_hostile_type_names_find_nothing(store: ResourceStore, hostile: str) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "p", 1), [], expected_version=0)
    assert await store.read(hostile, "p") is None
    assert await store.vread(hostile, "p", 1) is None
    assert await store.history(HistoryQuery(hostile, count=5)) == []
    assert await store.history_count(HistoryQuery(hostile)) == 0
