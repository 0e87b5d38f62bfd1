"""Contract: small documents with compare-and-swap revisions and expiry."""

from __future__ import annotations

import time

import pytest

from fhirpm.storage.port import ResourceStore, VersionConflict


async def test_unconditional_writes_count_revisions(store: ResourceStore) -> None:
    assert await store.doc_get("clients", "app") is None
    assert await store.doc_put("clients", "app", b'{"name":"one"}') == 1
    assert await store.doc_put("clients", "app", b'{"name":"two"}') == 2
    doc = await store.doc_get("clients", "app")
    assert doc is not None and (doc.rev, doc.body, doc.expires_at) == (2, b'{"name":"two"}',
                                                                         None)
    assert await store.doc_get("other", "app") is None  # collections are separate


async def test_compare_and_swap(store: ResourceStore) -> None:
    assert await store.doc_put("leases", "job", b"a", expected_rev=0) == 1
    with pytest.raises(VersionConflict):
        await store.doc_put("leases", "job", b"b", expected_rev=0)  # exists already
    with pytest.raises(VersionConflict):
        await store.doc_put("leases", "job", b"b", expected_rev=2)
    assert await store.doc_put("leases", "job", b"c", expected_rev=1) == 2
    assert (await store.doc_get("leases", "job")).body == b"c"
    with pytest.raises(VersionConflict):
        await store.doc_put("leases", "missing", b"x", expected_rev=1)
    assert await store.doc_get("leases", "missing") is None


async def test_delete(store: ResourceStore) -> None:
    await store.doc_put("codes", "c1", b"x")
    assert await store.doc_delete("codes", "c1", expected_rev=5) is False
    assert await store.doc_get("codes", "c1") is not None
    assert await store.doc_delete("codes", "c1", expected_rev=1) is True
    assert await store.doc_delete("codes", "c1") is False
    assert await store.doc_get("codes", "c1") is None


async def test_expired_documents_are_gone(store: ResourceStore) -> None:
    now = int(time.time())
    await store.doc_put("codes", "old", b"x", expires_at=now - 10)
    await store.doc_put("codes", "fresh", b"y", expires_at=now + 3600)
    assert await store.doc_get("codes", "old") is None
    fresh = await store.doc_get("codes", "fresh")
    assert fresh is not None and fresh.expires_at == now + 3600
    assert [d.key for d in await store.doc_list("codes")] == ["fresh"]
    # an expired document counts as absent for compare-and-swap
    with pytest.raises(VersionConflict):
        await store.doc_put("codes", "old", b"z", expected_rev=1)
    rev = await store.doc_put("codes", "old", b"z", expected_rev=0)
    assert rev >= 1 and (await store.doc_get("codes", "old")).body == b"z"


async def test_list_by_prefix_in_key_order(store: ResourceStore) -> None:
    for key in ("user:b", "user:a", "user:c", "client:a", "user"):
        await store.doc_put("auth", key, key.encode())
    assert [d.key for d in await store.doc_list("auth", "user:")] == [
        "user:a", "user:b", "user:c"]
    assert [d.key for d in await store.doc_list("auth", "user:", limit=2)] == [
        "user:a", "user:b"]
    assert [d.key for d in await store.doc_list("auth")] == [
        "client:a", "user", "user:a", "user:b", "user:c"]
    assert await store.doc_list("auth", "nobody") == []
    assert (await store.doc_list("auth", "client:"))[0].body == b"client:a"


async def test_a_unit_writes_documents_with_its_data(store: ResourceStore) -> None:
    from tests.contract.stores import version

    async with store.unit_of_work() as unit:
        await unit.put(version("Patient", "p1", 1), [], expected_version=0)
        await unit.doc_put("log", "m1", b"processed", expected_rev=0)
        await unit.doc_put("index", "patient|p1|m1", b"")
    assert (await store.doc_get("log", "m1")).rev == 1  # type: ignore[union-attr]
    assert await store.doc_get("index", "patient|p1|m1") is not None
    with pytest.raises(RuntimeError):  # a failing unit writes none of its documents
        async with store.unit_of_work() as unit:
            await unit.doc_put("log", "m2", b"x")
            raise RuntimeError("the message failed")
    assert await store.doc_get("log", "m2") is None
    with pytest.raises(VersionConflict):  # a lost compare-and-swap fails the whole unit
        async with store.unit_of_work() as unit:
            await unit.put(version("Patient", "p2", 1), [], expected_version=0)
            await unit.doc_put("log", "m1", b"again", expected_rev=0)
    assert await store.read("Patient", "p2") is None
    assert (await store.doc_get("log", "m1")).body == b"processed"  # type: ignore[union-attr]
