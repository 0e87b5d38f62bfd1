"""The audit journal (fhirpm.audit.journal): records durable on append, sealed into the
chain exactly once, in order, whoever seals them and whenever a process dies; the sealer
process does it beside the server (fhirpm.audit.sealer)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from fhirpm.audit import chain, journal, maintenance, record, sealer
from fhirpm.audit.journal import Journal
from fhirpm.audit.trail import Trail
from fhirpm.config import Settings
from fhirpm.storage.sqlite import SqliteResourceStore

ROOT = Path(__file__).resolve().parents[2]


def payload(n: int) -> bytes:
    """A whole AuditEvent's payload, numbered (what `record.whole` stores)."""
    return chain.canonical({"resourceType": "AuditEvent",
                            "recorded": f"2024-01-01T00:00:{n % 60:02d}Z", "outcome": "0",
                            "entity": [{"what": {"reference": f"Patient/p{n}"}}],
                            "extension": [{"url": "urn:test", "valueInteger": n}]})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteResourceStore]:
    s = SqliteResourceStore(str(tmp_path / "a.db"))
    await s.open()
    yield s
    await s.close()


def journal_for(store: SqliteResourceStore, directory: Path, **kw: object) -> Journal:
    return Journal(directory, store, chain.digest, record.draft_of, **kw)  # type: ignore[arg-type]


async def sealed_numbers(store: SqliteResourceStore) -> list[int]:
    """The numbers of the sealed records, in chain order; the chain must verify."""
    trail = Trail(store)
    assert (await maintenance.verify(trail)).ok
    return [orjson.loads(e.payload)["extension"][0]["valueInteger"]
            async for e in trail.entries()]


async def test_settle_seals_every_record_once_in_order(store: SqliteResourceStore,
                                                       tmp_path: Path) -> None:
    jnl = journal_for(store, tmp_path / "j", batch=10**9, delay=3600)
    await jnl.open()
    jnl.append([payload(0), payload(1)])
    jnl.append([payload(2)])
    assert await sealed_numbers(store) == []  # durable in the journal, not yet sealed
    await jnl.settle()
    await jnl.settle()  # nothing twice
    jnl.append([payload(3)])
    await jnl.settle()
    assert await sealed_numbers(store) == [0, 1, 2, 3]
    drafts = [e async for e in Trail(store).entries()]
    assert drafts[0].refs == ("Patient/p0",)  # read back from the payload (record.draft_of)
    await jnl.close()
    assert list((tmp_path / "j").glob("*.jnl")) == []  # retired
    assert (tmp_path / "j").stat().st_mode & 0o077 == 0  # who saw what: the server's only


async def test_full_files_are_replaced_and_retired(store: SqliteResourceStore,
                                                   tmp_path: Path) -> None:
    jnl = journal_for(store, tmp_path / "j", batch=10**9, delay=3600, capacity=4096)
    await jnl.open()
    for n in range(40):  # ~200 bytes each: several 4 KB files
        jnl.append([payload(n)])
    assert len(list((tmp_path / "j").glob("*.jnl"))) > 1
    await jnl.settle()
    assert len(list((tmp_path / "j").glob("*.jnl"))) == 1  # the full ones, sealed, deleted
    assert await sealed_numbers(store) == list(range(40))
    await jnl.close()


async def test_the_owner_seals_by_itself_without_a_sealer(store: SqliteResourceStore,
                                                          tmp_path: Path) -> None:
    jnl = journal_for(store, tmp_path / "j", batch=5, delay=3600)
    await jnl.open()
    for n in range(5):
        jnl.append([payload(n)])
    assert jnl._sealing is not None  # the fifth record started it
    await jnl._sealing
    assert await sealed_numbers(store) == list(range(5))
    await jnl.close()


async def test_two_sealers_of_one_file_take_each_record_once(tmp_path: Path) -> None:
    """The cursor's compare-and-swap: sealers in two stores (two processes) racing over
    the same journal file seal every record exactly once."""
    path = tmp_path / "a.db"
    stores = [SqliteResourceStore(str(path)) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        jnl = journal_for(stores[0], tmp_path / "j", batch=10**9, delay=3600)
        await jnl.open()
        segment = jnl._segments[-1]
        for n in range(300):
            jnl.append([payload(n)])
            if n % 50 == 49:
                await asyncio.gather(*(journal.seal_file(s, chain.digest, record.draft_of,
                                                         segment.path.name, segment.read)
                                       for s in stores))
        assert await sealed_numbers(stores[1]) == list(range(300))
        await jnl.close()
    finally:
        for s in stores:
            await s.close()


# -- a process that dies --------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from fhirpm.audit import chain, record
    from fhirpm.audit.journal import Journal
    from fhirpm.storage.sqlite import SqliteResourceStore
    from tests.audit.test_journal import payload

    async def main():
        store = SqliteResourceStore({db!r})
        await store.open()
        jnl = Journal({directory!r}, store, chain.digest, record.draft_of,
                      batch=10**9, delay=3600)
        await jnl.open()
        for n in range({sealed}):
            jnl.append([payload(n)])
        await jnl.settle()  # these are in the chain already
        for n in range({sealed}, {total}):
            jnl.append([payload(n)])
        segment = jnl._segments[-1]
        segment.map[segment.size:segment.size + 9] = b'{{"partial'  # killed mid-copy
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def test_a_killed_process_loses_and_repeats_nothing(store: SqliteResourceStore,
                                                          tmp_path: Path) -> None:
    """kill -9 after 60 records were appended, 25 of them sealed: the next process to
    open a journal seals the other 35, once, leaves the torn line out, deletes the file."""
    directory = tmp_path / "j"
    script = _WRITER.format(root=str(ROOT), db=store.path, directory=str(directory),
                            sealed=25, total=60)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             cwd=ROOT)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        # a live process's journal: not another process's to finish
        assert await journal.sweep(store, chain.digest, record.draft_of, directory,
                                   live=False) == 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert await sealed_numbers(store) == list(range(25))
    jnl = journal_for(store, directory, batch=10**9, delay=3600)
    assert await jnl.open() == 35
    assert await sealed_numbers(store) == list(range(60))
    assert [p.name for p in directory.glob("*.jnl")] == [jnl._segments[-1].path.name]
    await jnl.close()


async def test_the_sealer_process_seals_a_live_journal(store: SqliteResourceStore,
                                                       tmp_path: Path) -> None:
    """`fhirpm serve`'s sealer: a process of its own, given its settings on stdin, seals
    what a running server appended (the server itself never settles here) and stops when
    its stdin closes."""
    settings = Settings(store_url=f"sqlite:///{store.path}", audit={"enabled": True})
    directory = Path(f"{store.path}-audit-journal")
    jnl = journal_for(store, directory, batch=10**9, delay=3600)
    await jnl.open()
    for n in range(30):
        jnl.append([payload(n)])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.to_thread(sealer.start, settings, env=env)
    await asyncio.to_thread(sealer.stop, process)  # it sweeps at least once before stopping
    assert process.returncode == 0
    assert await sealed_numbers(store) == list(range(30))
    assert jnl.sealed == 0  # all the sealer's work
    await jnl.close()


async def test_metrics_show_what_waits_to_be_sealed(tmp_path: Path) -> None:
    """/metrics: the bytes of this process's records not yet in the chain."""
    from fhirpm.app import create_app
    from tests.audit.conftest import audit_settings, http_client, recorder
    from tests.bearer import staff_headers
    from tests.conftest import BASE

    app = create_app(audit_settings(tmp_path))
    jnl = recorder(app).trail.journal
    assert jnl is not None
    jnl.delay = 3600  # sealed only when asked: the gauge cannot move by itself

    async def unsealed(client: object) -> float:
        text = (await client.get(BASE.removesuffix("/fhir") + "/metrics")).text  # type: ignore[attr-defined]
        [line] = [x for x in text.splitlines()
                  if x.startswith("fhirpm_audit_journal_unsealed_bytes ")]
        return float(line.split()[1])

    async with (app.state.jobs.held(), app.router.lifespan_context(app),
                http_client(app, await staff_headers(app)) as client):
        await client.put("Patient/p1", json={"resourceType": "Patient", "id": "p1"})
        assert await unsealed(client) == 0
        assert (await client.get("Patient/p1")).status_code == 200
        assert await unsealed(client) > 0  # the read's record waits in the journal
        await jnl.settle()
        assert await unsealed(client) == 0
