"""A request whose AuditEvent cannot be stored fails (503), and a write then leaves nothing
behind; with fail_closed off, reads answer anyway. Group commit: many reads, few units.
Reads' records go to the store by group commit with the journal off, and to the journal
with it on (the server's default): each way, a failed audit write fails the request."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fhirpm.app import create_app
from fhirpm.storage.port import StoreError
from fhirpm.storage.sqlite import SqliteResourceStore
from tests.audit.conftest import PATIENT, audit_settings, chain_events, http_client, recorder
from tests.bearer import staff_headers
from tests.conftest import BASE


class AuditRefusingStore(SqliteResourceStore):
    """A real SQLite store whose disk is 'full' for the audit log once `broken` is set."""

    broken = False

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Any]:
        async with super().unit_of_work() as unit:
            yield _Refusing(unit, self)

    async def audit_commit(self, drafts: Any, seal: Any) -> None:
        await super().audit_commit(drafts, _full if self.broken else seal)


def _full(*_: Any) -> str:  # fails inside the commit's transaction, as a full disk would
    raise StoreError("database or disk is full")


class _Refusing:
    def __init__(self, unit: Any, store: AuditRefusingStore) -> None:
        self._unit = unit
        self._store = store

    async def audit_append(self, drafts: Any, seal: Any) -> None:
        await self._unit.audit_append(drafts, _full if self._store.broken else seal)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unit, name)


@asynccontextmanager
async def broken_app(tmp_path: Path, **audit: Any) -> AsyncIterator[Any]:
    """Reads' records committed to the store (journal off), which `broken` breaks."""
    settings = audit_settings(tmp_path, **{"journal": False, **audit})
    store = AuditRefusingStore(settings.store_url.removeprefix("sqlite:///"))
    app = create_app(settings, store=store)
    async with (app.router.lifespan_context(app),
                http_client(app, await staff_headers(app)) as client):
        yield app, store, client


async def test_reads_and_writes_fail_when_the_audit_write_fails(tmp_path: Path) -> None:
    async with broken_app(tmp_path) as (app, store, client):
        assert (await client.put("Patient/p1", json={**PATIENT, "id": "p1"})).status_code == 201
        store.broken = True
        r = await client.get("Patient/p1")
        assert r.status_code == 503
        assert r.json()["issue"][0]["code"] == "transient"
        assert "audit" in r.json()["issue"][0]["diagnostics"]
        r = await client.post("Patient", json=PATIENT)
        assert r.status_code == 503
        store.broken = False
        listed = await client.get("Patient")
        assert listed.json()["total"] == 1  # the refused create left nothing behind
        assert [e["subtype"][0]["code"] for e in await chain_events(app)] == ["update",
                                                                              "search-type"]


async def test_fail_open_answers_reads(tmp_path: Path) -> None:
    async with broken_app(tmp_path, fail_closed=False) as (_app, store, client):
        await client.put("Patient/p1", json={**PATIENT, "id": "p1"})
        store.broken = True
        assert (await client.get("Patient/p1")).status_code == 200


async def test_concurrent_reads_share_commits(tmp_path: Path) -> None:
    async with broken_app(tmp_path) as (app, _store, client):
        await client.put("Patient/p1", json={**PATIENT, "id": "p1"})
        groups = recorder(app).batch.groups
        answers = await asyncio.gather(*(client.get("Patient/p1") for _ in range(40)))
        assert all(a.status_code == 200 for a in answers)
        assert len(await chain_events(app)) == 41
        assert recorder(app).batch.groups - groups < 40  # grouped, not one unit per read
        # and /metrics says so: records per commit
        scrape = await client.get(BASE.removesuffix("/fhir") + "/metrics")
        assert scrape.status_code == 200, scrape.text
        text = scrape.text
        samples = dict(re.findall(r"^(fhirpm_audit_group_\w+) (\S+)$", text, re.M))
        commits = float(samples["fhirpm_audit_group_commits_total"])
        assert commits == recorder(app).batch.groups
        assert float(samples["fhirpm_audit_group_records_total"]) > commits


async def test_a_failed_journal_write_fails_the_read(tmp_path: Path) -> None:
    """With the journal on, a read's record is durable once copied there; when the journal
    cannot take it (its file is full and no new one can be made: here its directory is
    gone, as a full disk refuses the file's blocks), the read fails with 503; once files
    can be made again, reads answer again."""
    app = create_app(audit_settings(tmp_path))
    journal = recorder(app).trail.journal
    assert journal is not None
    journal.capacity = 4096  # a page: a handful of records per file
    async with (app.state.jobs.held(), app.router.lifespan_context(app),
                http_client(app, await staff_headers(app)) as client):
        await client.put("Patient/p1", json={**PATIENT, "id": "p1"})
        directory = journal.directory
        journal.directory = tmp_path / "gone" / "journal"
        statuses = [(await client.get("Patient/p1")).status_code for _ in range(40)]
        assert 200 in statuses and statuses[-1] == 503  # answered until the file was full
        refused = statuses.count(503)
        r = await client.get("Patient/p1")
        assert r.status_code == 503
        assert "audit" in r.json()["issue"][0]["diagnostics"]
        journal.directory = directory
        assert (await client.get("Patient/p1")).status_code == 200
        kinds = [e["subtype"][0]["code"] for e in await chain_events(app)]
        assert kinds == ["update"] + ["read"] * (40 - refused + 1)  # refused: no record
