"""Contract: what extraction leaves out of the stored index entries is still searched on
every store: a parameter that selects what another of its type selects (`phonetic` and
`name` on Patient) through the other's entries, also beside a type where it is no alias
(Organization, whose `name` reads `alias` too); `_id` from the resource's id, in chains
and `_has` too."""

from __future__ import annotations

from typing import Any

import orjson

from fhirpm.search.extract import RegistryIndexer
from fhirpm.search.parse import SearchParser
from fhirpm.search.registry import Registry
from fhirpm.storage.port import ResourceStore
from tests.contract.stores import stored_index, version

RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Smyth", "given": ["Jo"]}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Abbott"}]},
    {"resourceType": "Patient", "id": "p3", "gender": "male"},
    {"resourceType": "Organization", "id": "o1", "name": "Smythe Clinic"},
    {"resourceType": "Organization", "id": "o2", "name": "Acme", "alias": ["Smythson"]},
    {"resourceType": "Encounter", "id": "e1", "status": "finished",
     "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}},
]


async def _load(store: ResourceStore, indexer: RegistryIndexer) -> None:
    async with store.unit_of_work() as uow:
        for res in RESOURCES:
            body = orjson.dumps(res)
            await uow.put(version(res["resourceType"], res["id"], 1, body),
                          indexer.extract(res["resourceType"], res), expected_version=0)


async def _ids(store: ResourceStore, parser: SearchParser, types: list[str],
               params: list[tuple[str, str]]) -> list[str]:
    query = parser.parse(types, params, strict=True).query
    return [v.id for v in (await store.search(query)).matches]


async def test_an_alias_is_stored_once_and_searched_through_the_other(
        store: ResourceStore) -> None:
    registry = Registry.load_default()
    indexer = RegistryIndexer(registry)
    parser = SearchParser(registry)
    await _load(store, indexer)

    stored = {e.param for e in await stored_index(store, "Patient", "p1")}
    assert "name" in stored and "phonetic" not in stored
    assert "phonetic" in {e.param for e in await stored_index(store, "Organization", "o1")}

    assert await _ids(store, parser, ["Patient"], [("phonetic", "smy")]) == ["p1"]
    assert await _ids(store, parser, ["Patient"], [("phonetic:exact", "Abbott")]) == ["p2"]
    assert await _ids(store, parser, ["Patient"], [("phonetic:missing", "true")]) == ["p3"]
    assert await _ids(store, parser, ["Patient"], [("phonetic:missing", "false"),
                                                   ("_sort", "-phonetic")]) == ["p1", "p2"]
    # two types, the code an alias on one only: Organization's alias stays unmatched
    both = await _ids(store, parser, ["Patient", "Organization"], [("phonetic", "smyth")])
    assert sorted(both) == ["o1", "p1"]
    assert sorted(await _ids(store, parser, ["Organization"], [("name", "smyth")])) == [
        "o1", "o2"]


async def test_id_is_searched_without_entries_of_its_own(store: ResourceStore) -> None:
    registry = Registry.load_default()
    parser = SearchParser(registry)
    await _load(store, RegistryIndexer(registry))
    assert "_id" not in {e.param for e in await stored_index(store, "Patient", "p1")}

    assert sorted(await _ids(store, parser, ["Patient"], [("_id", "p1,p3")])) == ["p1", "p3"]
    assert sorted(await _ids(store, parser, ["Patient"], [("_id:not", "p1")])) == ["p2", "p3"]
    assert await _ids(store, parser, ["Encounter"], [("subject._id", "p1")]) == ["e1"]
    assert await _ids(store, parser, ["Encounter"], [("subject._id", "p2")]) == []
    assert await _ids(store, parser, ["Patient"], [("_has:Encounter:subject:_id", "e1")]) == [
        "p1"]
    assert await _ids(store, parser, ["Patient"], [("_sort", "-_id")]) == ["p3", "p2", "p1"]
