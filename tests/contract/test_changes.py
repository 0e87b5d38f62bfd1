"""Contract: the change log (every committed version, commit ordered) and durable cursors."""

from __future__ import annotations

import asyncio

from fhirpm.storage.port import ResourceStore
from tests.contract.conftest import Opener
from tests.contract.stores import version


async def test_changes_in_commit_order_with_bodies(store: ResourceStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "a", 1), [], expected_version=0)
        await uow.put(version("Patient", "b", 1), [], expected_version=0)
    async with store.unit_of_work() as uow:
        await uow.put(version("Patient", "a", 2, method="DELETE"), [], expected_version=1)
    log = await store.changes(0, 10)
    assert [(v.id, v.version, v.method) for v in log] == [
        ("a", 1, "POST"), ("b", 1, "POST"), ("a", 2, "DELETE")]
    assert log[0].body == (await store.vread("Patient", "a", 1)).body
    seqs = [v.seq for v in log]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [v.seq for v in await store.changes(seqs[0], 10)] == seqs[1:]
    assert [v.seq for v in await store.changes(0, 2)] == seqs[:2]
    assert await store.changes(seqs[-1], 10) == []
    assert await store.changes(0, 0) == []


async def test_cursors_are_durable(open_store: Opener) -> None:
    store = await open_store()
    assert await store.get_cursor("audit") == 0
    await store.set_cursor("audit", 7)
    await store.set_cursor("audit", 9)
    await store.set_cursor("reminders", 3)
    other = await open_store()  # another process on the same data
    assert await other.get_cursor("audit") == 9
    assert await other.get_cursor("reminders") == 3


async def test_a_follower_sees_every_commit_once_in_order_under_concurrent_writers(
        open_store: Opener) -> None:
    """Two writers (two store instances: two server processes as far as the data goes)
    commit concurrently while a consumer follows the log from its cursor. Whatever the
    interleaving, the consumer must end with every committed version exactly once, in
    increasing seq order: a commit never appears below a seq already handed out."""
    writers = [await open_store(), await open_store()]
    reader = await open_store()
    units_per_writer = 6
    done = asyncio.Event()
    wake = asyncio.Event()  # set by every commit (both adapters announce their commits)
    for writer in writers:
        writer.add_commit_listener(wake.set)

    async def write(n: int) -> None:
        for i in range(units_per_writer):
            async with writers[n].unit_of_work() as uow:
                await uow.put(version("Patient", f"w{n}-{i}", 1), [], expected_version=0)
                await uow.put(version("Observation", f"w{n}-{i}", 1), [],
                              expected_version=0)

    delivered: list[tuple[int, str, str]] = []

    async def follow() -> None:
        cursor = 0
        while True:
            wake.clear()
            finished = done.is_set()  # read before the batch: a last batch is still taken
            batch = await reader.changes(cursor, 5)
            for v in batch:
                assert v.seq > cursor
                cursor = v.seq
                delivered.append((v.seq, v.type, v.id))
            if not batch:
                if finished:
                    return
                await wake.wait()

    follower = asyncio.create_task(follow())
    await asyncio.gather(write(0), write(1))
    done.set()
    wake.set()
    await follower
    expected = {(t, f"w{n}-{i}") for n in range(2) for i in range(units_per_writer)
                for t in ("Patient", "Observation")}
    assert sorted((t, i) for _, t, i in delivered) == sorted(expected)
    assert [s for s, _, _ in delivered] == sorted({s for s, _, _ in delivered})
