"""The stored chain: `fhirpm audit verify` on the real SQLite file (and tampering with a
row there), retention that keeps the rest verifiable, and NDJSON export by date."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI

from fhirpm.audit import maintenance
from fhirpm.audit.chain import link_of
from fhirpm.audit.trail import event_id
from fhirpm.audit.wiring import RETENTION_JOB, purge_now
from fhirpm.cli import main
from tests.audit.conftest import PATIENT, chain_events, head, recorder, subtype


async def make_events(staff: httpx.AsyncClient, n: int = 3) -> None:
    for _ in range(n):
        assert (await staff.post("Patient", json=PATIENT)).status_code == 201


async def cli(db: Path, *args: str) -> int:
    """`fhirpm audit ...` as a user runs it (its own event loop: in a thread here)."""
    return await asyncio.to_thread(main, ["audit", *args, "--store-url", f"sqlite:///{db}"])


def db_of(app: FastAPI) -> Path:
    return Path(app.state.settings.store_url.removeprefix("sqlite:///"))


async def test_chain_is_contiguous_and_verifies(audit_app: FastAPI,
                                                staff: httpx.AsyncClient) -> None:
    await make_events(staff)
    events = await chain_events(audit_app)
    seqs = [link_of(e).seq for e in events]  # type: ignore[union-attr]
    assert seqs == list(range(1, len(events) + 1))
    assert [e["id"] for e in events] == [event_id(s) for s in seqs]
    report = await maintenance.verify(recorder(audit_app).trail)
    assert report.ok and report.checked == len(events)


async def test_verify_cli_detects_a_tampered_row(audit_app: FastAPI, staff: httpx.AsyncClient,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    await make_events(staff, 4)
    db = db_of(audit_app)
    assert await cli(db, "verify") == 0
    assert "audit chain OK" in capsys.readouterr().out
    # someone with access to the database file rewrites who did what in event 3
    with sqlite3.connect(db) as conn:
        (payload,) = conn.execute("SELECT payload FROM audit_log WHERE seq = 3").fetchone()
        assert b"staff" in payload
        conn.execute("UPDATE audit_log SET payload = ? WHERE seq = 3",
                     (bytes(payload).replace(b"staff", b"somebody-else"),))
    assert await cli(db, "verify") == 1
    err = capsys.readouterr().err
    assert "BROKEN at seq 3" in err and "changed after it was sealed" in err


async def test_verify_detects_a_removed_event(audit_app: FastAPI,
                                              staff: httpx.AsyncClient) -> None:
    await make_events(staff, 4)
    with sqlite3.connect(db_of(audit_app)) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 2")
    report = await maintenance.verify(recorder(audit_app).trail)
    assert not report.ok and report.at_seq == 2 and "missing" in (report.problem or "")


async def test_retention_purges_a_prefix_and_the_rest_verifies(
        audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    await make_events(staff, 5)
    trail = recorder(audit_app).trail
    events = await chain_events(audit_app)
    cut = events[3]["recorded"]  # events 1..3 are older than this
    result = await maintenance.purge(trail, cut)
    assert (result.removed, result.checkpoint.seq, result.refused) == (3, 3, None)
    assert [e["id"] for e in await chain_events(audit_app, 3)] == [event_id(s)
                                                                   for s in range(4, 6)]
    assert await audit_app.state.store.audit_get(1) is None
    assert (await staff.get(f"AuditEvent/{event_id(1)}")).status_code == 404
    assert (await staff.get("AuditEvent", params={"_id": event_id(2)})).json()["total"] == 0
    report = await maintenance.verify(trail)
    assert report.ok and report.start.seq == 3
    await make_events(staff, 1)  # the chain goes on after a purge
    assert (await maintenance.verify(trail)).ok


async def test_retention_job_is_registered_and_records_its_purge(
        audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    assert RETENTION_JOB in audit_app.state.jobs.names
    await make_events(staff, 2)
    before = await head(audit_app)
    result = await purge_now(recorder(audit_app), 0)  # everything is past a 0-day retention
    assert result.removed == before and result.checkpoint.seq == before
    [purge_event] = await chain_events(audit_app, before)
    assert subtype(purge_event) == "audit-purge" and purge_event["action"] == "D"
    assert (await maintenance.verify(recorder(audit_app).trail)).ok


async def test_a_tampered_checkpoint_is_detected(audit_app: FastAPI,
                                                 staff: httpx.AsyncClient) -> None:
    await make_events(staff, 3)
    trail = recorder(audit_app).trail
    events = await chain_events(audit_app)
    await maintenance.purge(trail, events[1]["recorded"])
    with sqlite3.connect(db_of(audit_app)) as conn:  # hide one more event behind the cut
        (body,) = conn.execute("SELECT body FROM documents WHERE collection = 'audit'"
                               ).fetchone()
        moved = {**orjson.loads(body), "seq": 2}
        conn.execute("UPDATE documents SET body = ? WHERE collection = 'audit'",
                     (orjson.dumps(moved),))
    report = await maintenance.verify(trail)
    assert not report.ok and "checkpoint" in (report.problem or "")


async def test_purge_refuses_a_prefix_that_does_not_verify(
        audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    await make_events(staff, 3)
    with sqlite3.connect(db_of(audit_app)) as conn:
        (payload,) = conn.execute("SELECT payload FROM audit_log WHERE seq = 1").fetchone()
        conn.execute("UPDATE audit_log SET payload = ? WHERE seq = 1",
                     (bytes(payload).replace(b"staff", b"other"),))
    result = await maintenance.purge(recorder(audit_app).trail, "9999")
    assert result.removed == 0 and result.refused is not None
    assert await audit_app.state.store.audit_get(1) is not None


async def test_export_ndjson_by_date_range(audit_app: FastAPI, staff: httpx.AsyncClient,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    await make_events(staff, 4)
    events = await chain_events(audit_app)
    out = tmp_path / "audit.ndjson"
    since, until = events[1]["recorded"], events[3]["recorded"]
    assert await cli(db_of(audit_app), "export", "--since", since, "--until", until,
               "--out", str(out)) == 0
    lines = out.read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == [events[1]["id"], events[2]["id"]]
    assert "exported 2 AuditEvents" in capsys.readouterr().err
