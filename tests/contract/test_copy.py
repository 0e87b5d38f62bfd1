"""`fhirpm store copy`: every version moves, bytes intact, resumable, verified; both ways
between SQLite and MongoDB (real or emulated)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirpm.app import build_interactions
from fhirpm.audit import chain
from fhirpm.config import Settings
from fhirpm.repository import Repository
from fhirpm.storage import copy as store_copy
from fhirpm.storage.copy import CopyError, copy_store
from fhirpm.storage.mongo import MongoResourceStore
from fhirpm.storage.port import AuditDraft, AuditSpan, HistoryQuery, ResourceStore
from fhirpm.storage.sqlite import SqliteResourceStore
from tests.contract.stores import stored_index, version

TYPES = ("Patient", "Observation", "Organization")
OBSERVATION = {"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
               "valueQuantity": {"value": 72.50, "unit": "kg"}}


class Interrupted(Exception):
    pass


def repository(store: ResourceStore) -> Repository:
    return build_interactions(Settings(store_url="sqlite:///unused.db"), store).repo


@pytest.fixture(params=["sqlite->mongo", "mongo->sqlite"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path,
               mongo_url: str) -> AsyncIterator[tuple[ResourceStore, ResourceStore]]:
    sqlite = SqliteResourceStore(str(tmp_path / "copy.db"))
    mongo = MongoResourceStore(mongo_url)
    await sqlite.open()
    await mongo.open()
    yield (sqlite, mongo) if request.param == "sqlite->mongo" else (mongo, sqlite)
    await sqlite.close()
    await mongo.close()


async def seed(store: ResourceStore) -> None:
    from decimal import Decimal

    repo = repository(store)
    patients = []
    for n in range(4):
        created = await repo.create("Patient", {"resourceType": "Patient",
                                                "name": [{"family": f"Family{n}"}]})
        patients.append(created.version.id)
    await repo.update("Patient", patients[0], {"resourceType": "Patient", "id": patients[0],
                                               "name": [{"family": "Renamed"}]})
    await repo.delete("Patient", patients[1])
    await repo.create("Organization", {"resourceType": "Organization", "name": "Clinic"})
    obs = {**OBSERVATION, "valueQuantity": {"value": Decimal("72.50"), "unit": "kg"},
           "subject": {"reference": f"Patient/{patients[2]}"}}
    await repo.create("Observation", obs)


async def every_version(store: ResourceStore) -> list[tuple[str, str, int, str, bytes]]:
    versions = await store.history(HistoryQuery(count=1000))
    return sorted((v.type, v.id, v.version, v.last_updated, v.body) for v in versions)


async def test_copy_moves_every_version_and_reindexes(pair) -> None:
    source, destination = pair
    await seed(source)
    async with source.unit_of_work() as unit:  # the audit log goes along, seals unchanged
        await unit.audit_append([AuditDraft("2026-01-01T00:00:00.000000Z", ("Patient/a",),
                                            b'["e",1]')] * 2,
                                lambda p, seq, prev: chain.digest(p, seq, prev))
    handled: list[int] = []
    report = await copy_store(source, destination, repository(destination).indexer,
                              source_name="src", types=TYPES, batch=3,
                              progress=handled.append)
    assert sum(handled) == report.copied == 8 and report.skipped == 0
    assert report.audit == 2
    everything = AuditSpan()
    assert await destination.audit_list(everything) == await source.audit_list(everything)
    assert report.versions == {"Patient": 6, "Organization": 1, "Observation": 1}
    assert report.live == {"Patient": 3, "Organization": 1, "Observation": 1}
    assert await every_version(destination) == await every_version(source)
    observation = (await destination.history(HistoryQuery("Observation", count=1)))[0]
    assert b'"value":72.50' in observation.body
    entries = await stored_index(destination, "Observation", observation.id)
    assert {e.param for e in entries} >= {"code", "subject", "value-quantity"}


async def test_an_interrupted_copy_resumes_without_duplicates(pair) -> None:
    source, destination = pair
    await seed(source)
    indexer = repository(destination).indexer

    def stop_after_first_batch(n: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        await copy_store(source, destination, indexer, source_name="src", types=TYPES,
                         batch=4, progress=stop_after_first_batch)
    assert await destination.history_count(HistoryQuery()) == 4
    # as if killed after the batch committed but before its progress was recorded
    await destination.doc_put(store_copy.PROGRESS, "src", b'{"after": 0, "handled": 0}')
    report = await copy_store(source, destination, indexer, source_name="src", types=TYPES,
                              batch=4)
    assert report.skipped == 4 and report.copied == 4
    assert await every_version(destination) == await every_version(source)


async def test_refuses_a_destination_that_is_not_empty_or_has_diverged(pair) -> None:
    source, destination = pair
    await seed(source)
    async with destination.unit_of_work() as uow:
        await uow.put(version("Patient", "stranger", 1), [], expected_version=0)
    indexer = repository(destination).indexer
    with pytest.raises(CopyError, match="empty"):
        await copy_store(source, destination, indexer, source_name="src", types=TYPES)
    first = (await source.changes(0, 1))[0]
    await destination.doc_put(store_copy.PROGRESS, "other", b'{"after": 0}')
    async with destination.unit_of_work() as uow:  # a version 1 the source never had
        await uow.put(version(first.type, first.id, 1), [], expected_version=0)
    with pytest.raises(CopyError, match="diverged"):
        await copy_store(source, destination, indexer, source_name="other", types=TYPES,
                         batch=2)


async def test_the_command_line(tmp_path: Path, mongo_url: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    source_url = f"sqlite:///{tmp_path / 'src.db'}"
    source = SqliteResourceStore(str(tmp_path / "src.db"))
    await source.open()
    await seed(source)
    await source.doc_put("auth.clients", "app-1", b'{"name":"one"}')
    await source.doc_put("auth.clients", "old", b'{}', expires_at=1)  # expired: not copied
    await source.close()
    parser = argparse.ArgumentParser()
    store_copy.install(parser.add_subparsers(dest="command"),
                       lambda settings, store: repository(store).indexer)
    args = parser.parse_args(["store", "copy", source_url, mongo_url, "--no-progress",
                              "--documents", "auth.clients,empty"])
    # the command runs its own event loop: run it outside this test's loop
    import asyncio

    code = await asyncio.to_thread(args.func, args)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "copied 8 versions (0 already there), 0 audit log entries and 1 documents" in out.out
    copied = MongoResourceStore(mongo_url)
    await copied.open()
    assert (await copied.doc_get("auth.clients", "app-1")).body == b'{"name":"one"}'
    assert await copied.doc_get("auth.clients", "old") is None
    await copied.close()
    again = await asyncio.to_thread(args.func, args)  # a second run finds nothing to do
    assert again == 0 and "copied 0 versions" in capsys.readouterr().out
    same = parser.parse_args(["store", "copy", source_url, source_url])
    assert same.func(same) == 2
