"""SQLite point reads remembered per connection until a resource changes
(fhirpm.storage.sqlite.reads): a request never gets a version older than the last commit
made before it arrived; commits that change no resource (the audit trail's, documents)
leave what is remembered alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fhirpm.audit.chain import digest
from fhirpm.storage.port import AuditDraft
from fhirpm.storage.sqlite import SqliteResourceStore
from tests.contract.stores import version


async def put(store: SqliteResourceStore, v, expected: int) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(v, [], expected_version=expected)


async def test_a_read_is_remembered_until_this_process_commits(tmp_path: Path) -> None:
    store = SqliteResourceStore(str(tmp_path / "r.db"))
    await store.open()
    try:
        await put(store, version("Patient", "p", 1), 0)
        first = await store.read("Patient", "p")
        assert first is not None and first.version == 1
        await asyncio.sleep(0)  # the next turn of the loop: a request arriving later
        assert await store.read("Patient", "p") is first  # served from memory
        await put(store, version("Patient", "p", 2), 1)
        second = await store.read("Patient", "p")
        assert second is not None and second.version == 2
        await put(store, version("Patient", "p", 3, method="DELETE"), 2)
        gone = await store.read("Patient", "p")
        assert gone is not None and gone.deleted
    finally:
        await store.close()


async def test_a_commit_by_another_connection_is_seen(tmp_path: Path) -> None:
    """Another process (or the CLI loader) writing the same file: the next read sees it."""
    path = tmp_path / "r.db"
    store = SqliteResourceStore(str(path))
    await store.open()
    try:
        await put(store, version("Patient", "p", 1), 0)
        assert (await store.read("Patient", "p")).version == 1
        await put_elsewhere(path, version("Patient", "p", 2), 1)
        await asyncio.sleep(0)  # a request arriving after that commit: the next loop turn
        assert (await store.read("Patient", "p")).version == 2
    finally:
        await store.close()


async def put_elsewhere(path: Path, v, expected: int) -> None:
    """`v` stored by another store on the same file (another process, the CLI loader)."""
    other = SqliteResourceStore(str(path))
    await other.open()
    try:
        await put(other, v, expected)
    finally:
        await other.close()


async def test_commits_that_change_no_resource_keep_what_is_remembered(tmp_path: Path
                                                                       ) -> None:
    """Another connection's commits of audit records and documents (the audit sealer, the
    authorization server) leave remembered reads alone; an expunge does not."""
    path = tmp_path / "r.db"
    store = SqliteResourceStore(str(path))
    await store.open()
    other = SqliteResourceStore(str(path))
    await other.open()
    try:
        await put(store, version("Patient", "p", 1), 0)
        first = await store.read("Patient", "p")
        async with other.unit_of_work() as unit:
            await unit.audit_append([AuditDraft("2024-01-01T00:00:00Z", ("Patient/p",),
                                                b'["x"]')], digest)
            await unit.doc_put("tests", "k", b"{}")
        await asyncio.sleep(0)
        assert await store.read("Patient", "p") is first  # still remembered
        await other.expunge("Patient", ["p"])
        await asyncio.sleep(0)
        assert await store.read("Patient", "p") is None
    finally:
        await other.close()
        await store.close()


async def test_misses_and_a_full_memory_still_answer_from_the_database(tmp_path: Path
                                                                       ) -> None:
    store = SqliteResourceStore(str(tmp_path / "r.db"))
    await store.open()
    try:
        for n in range(5):
            await put(store, version("Patient", f"p{n}", 1), 0)
        await store.read("Patient", "p0")  # the connection's memory now exists
        store._local.reads.limit = 2
        for _ in range(2):
            for n in range(5):
                found = await store.read("Patient", f"p{n}")
                assert found is not None and found.id == f"p{n}"
            assert await store.read("Patient", "nope") is None
        assert len(store._local.reads._versions) <= 2
    finally:
        await store.close()


def test_a_look_does_not_outlive_its_event_loop(tmp_path: Path) -> None:
    """A loop stopped before its next turn (its look never expired) leaves nothing standing
    for the next loop that reads through the same store."""
    path = tmp_path / "r.db"
    store = SqliteResourceStore(str(path))
    loop = asyncio.new_event_loop()

    async def read_and_stop() -> None:
        await store.read("Patient", "p")
        loop.stop()  # the loop ends with this turn: the look's expiry, due next turn, never runs

    try:
        loop.run_until_complete(store.open())
        loop.run_until_complete(put(store, version("Patient", "p", 1), 0))
        reading = loop.create_task(read_and_stop())
        loop.run_forever()
        assert reading.done() and store._local.reads._looked_on is loop  # still standing
    finally:
        loop.close()
    asyncio.run(put_elsewhere(path, version("Patient", "p", 2), 1))

    async def read_then_close() -> int:
        try:
            return (await store.read("Patient", "p")).version
        finally:
            await store.close()

    assert asyncio.run(read_then_close()) == 2
