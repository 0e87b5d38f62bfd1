"""The audit log part of the port, on every store: appends commit or roll back with their
unit, get consecutive seqs sealed after the head as the committing transaction sees it
(also with two stores on the same data appending at once), are found by reference, time
and position, counted, purged as a prefix, and restored unchanged by `store copy`."""

from __future__ import annotations

import asyncio

import pytest

from fhirpm.audit import chain
from fhirpm.storage.port import AuditDraft, AuditSpan, ResourceStore
from tests.contract.conftest import Opener


def seal(payload: bytes, seq: int, previous: str) -> str:
    return chain.digest(payload, seq, previous)


def draft(n: int, *refs: str) -> AuditDraft:
    return AuditDraft(f"2026-01-01T00:00:{n:02d}.000000Z", refs, f'["e",{n}]'.encode())


async def append(store: ResourceStore, *drafts: AuditDraft) -> None:
    async with store.unit_of_work() as unit:
        await unit.audit_append(list(drafts), seal)


async def test_appends_are_sealed_in_order_and_found(store: ResourceStore) -> None:
    assert await store.audit_head() is None
    await append(store, draft(1, "Patient/a", "Practitioner/x"), draft(2, "Patient/b"))
    await store.audit_commit([draft(3, "Patient/a")], seal)  # a transaction of its own
    everything = await store.audit_list(AuditSpan())
    assert [e.seq for e in everything] == [1, 2, 3]
    assert chain.verify(everything).ok
    assert (await store.audit_head()).seq == 3  # type: ignore[union-attr]
    assert (await store.audit_get(2)).payload == b'["e",2]'  # type: ignore[union-attr]
    assert await store.audit_get(9) is None
    assert everything[0].refs == ("Patient/a", "Practitioner/x")
    by_ref = await store.audit_list(AuditSpan(ref="Patient/a", descending=True))
    assert [e.seq for e in by_ref] == [3, 1]
    assert [e.seq for e in await store.audit_list(AuditSpan(ref="Patient/a", after=1))] == [3]
    window = AuditSpan(since="2026-01-01T00:00:02.000000Z", until="2026-01-01T00:00:02.5Z")
    assert [e.seq for e in await store.audit_list(window)] == [2]
    assert await store.audit_count(AuditSpan(ref="Patient/a")) == 2
    assert await store.audit_count(AuditSpan(before=3, limit=1)) == 2  # limit not counted


async def test_a_failing_unit_appends_nothing(store: ResourceStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as unit:
            await unit.audit_append([draft(1, "Patient/a")], seal)
            raise RuntimeError("the write it records failed")
    assert await store.audit_list(AuditSpan()) == []
    await append(store, draft(2))
    assert [e.seq for e in await store.audit_list(AuditSpan())] == [1]


async def test_two_stores_appending_at_once_make_one_chain(open_store: Opener) -> None:
    stores = [await open_store(), await open_store()]
    await asyncio.gather(*(append(stores[n % 2], draft(n, f"Patient/{n}"))
                           for n in range(10)))
    entries = await stores[0].audit_list(AuditSpan())
    assert [e.seq for e in entries] == list(range(1, 11))
    assert chain.verify(entries).ok
    assert sorted(e.payload for e in entries) == sorted(draft(n).payload for n in range(10))


async def test_purge_removes_a_prefix_and_the_chain_goes_on(store: ResourceStore) -> None:
    await append(store, draft(1, "Patient/a"), draft(2, "Patient/a"), draft(3))
    assert await store.audit_purge(3) == 3
    assert await store.audit_list(AuditSpan(ref="Patient/a")) == []
    assert await store.audit_head() is None
    await append(store, draft(4))  # after the purged head, not from the genesis
    [next_one] = await store.audit_list(AuditSpan())
    assert next_one.seq == 4 and next_one.previous != chain.GENESIS


async def test_restore_keeps_seqs_and_seals(store: ResourceStore) -> None:
    await append(store, draft(1, "Patient/a"), draft(2))
    entries = await store.audit_list(AuditSpan())
    await store.audit_purge(2)
    await store.audit_restore(entries)  # as `store copy` writes them into another store
    assert await store.audit_list(AuditSpan()) == entries
    assert [e.seq for e in await store.audit_list(AuditSpan(ref="Patient/a"))] == [1]
    await append(store, draft(3))  # continues the restored chain
    assert chain.verify(await store.audit_list(AuditSpan())).ok


async def test_a_group_waits_for_another_process_holding_the_write_lock(
        store: ResourceStore, store_kind: str) -> None:
    if store_kind != "sqlite":
        pytest.skip("SQLite's database-wide write lock")
    import sqlite3

    other = sqlite3.connect(store.path, isolation_level=None)  # type: ignore[attr-defined]
    other.execute("BEGIN IMMEDIATE")  # another process writing
    group = asyncio.ensure_future(store.audit_commit([draft(1, "Patient/a")], seal))
    for _ in range(5):  # let it try the lock (then it waits on the writer thread)
        await asyncio.sleep(0)
    assert await store.read("Patient", "nobody") is None  # the event loop is not blocked
    assert not group.done()  # the group cannot commit while the lock is held
    other.execute("COMMIT")
    await group  # ... and commits once it is free
    other.close()
    assert [e.seq for e in await store.audit_list(AuditSpan())] == [1]
