"""Contract: `expunge` removes resources for good (retention), and only those."""

from __future__ import annotations

from fhirpm.search.query import Param, SearchQuery, TokenPred
from fhirpm.search.values import IndexEntry, TokenValue
from fhirpm.storage.port import HistoryQuery, ResourceStore
from tests.contract.stores import version


async def put(store: ResourceStore, type_: str, id_: str, n: int, code: str) -> None:
    entries = [IndexEntry("action", TokenValue(None, code))]
    async with store.unit_of_work() as uow:
        await uow.put(version(type_, id_, n), entries, expected_version=n - 1,
                      unique_keys=(f"key-{type_}-{id_}",) if n == 1 else ())


def by_action(code: str) -> SearchQuery:
    return SearchQuery(types=("AuditEvent",),
                       where=(Param("action", "token", (TokenPred(code),)),))


async def test_expunge_removes_every_trace(store: ResourceStore) -> None:
    for id_ in ("a1", "a2", "a3"):
        await put(store, "AuditEvent", id_, 1, "R")
    await put(store, "AuditEvent", "a2", 2, "R")
    await put(store, "Patient", "a1", 1, "R")  # same id, other type: untouched

    assert await store.expunge("AuditEvent", ["a1", "a2", "gone"]) == 2
    assert await store.read("AuditEvent", "a1") is None
    assert await store.vread("AuditEvent", "a2", 1) is None
    assert await store.read("AuditEvent", "a3") is not None
    assert await store.read("Patient", "a1") is not None
    kept = await store.history(HistoryQuery(type="AuditEvent", count=10))
    assert [(v.id, v.version) for v in kept] == [("a3", 1)]
    assert [v.id for v in (await store.search(by_action("R"))).matches] == ["a3"]
    assert {v.id for v in await store.changes(0, 100)} == {"a1", "a3"}  # Patient/a1, a3
    # the unique key is free again, and expunging twice changes nothing
    await put(store, "AuditEvent", "a1", 1, "R")
    assert await store.expunge("AuditEvent", ["a2"]) == 0
