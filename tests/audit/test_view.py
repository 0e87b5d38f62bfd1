"""AuditEvents served from the audit log: paging through a patient's trail and the whole
log, newest first, `_include`, `_id`, totals, history, and clear refusals for what the log
does not offer. Each answer is checked against the stored chain itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.audit import view
from fhirpm.audit.trail import event_id
from tests.audit.conftest import PATIENT, audit_settings, chain_events, patient_of


@pytest.fixture(params=["sqlite", "mongo"])
async def audit_app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The app with the trail on, on each store: the view is the same code over both
    stores' audit logs."""
    settings = audit_settings(tmp_path)
    if request.param == "mongo":
        settings = settings.model_copy(update={"store_url": request.getfixturevalue(
            "mongo_url")})
    app = create_app(settings)
    async with app.state.jobs.held(), app.router.lifespan_context(app):  # no timer runs
        yield app


async def seen(staff: httpx.AsyncClient, pid: str, reads: int) -> None:
    assert (await staff.put(f"Patient/{pid}", json={**PATIENT, "id": pid})).status_code in (
        200, 201)
    for _ in range(reads):
        assert (await staff.get(f"Patient/{pid}")).status_code == 200


async def every_page(staff: httpx.AsyncClient, params: dict[str, str]) -> list[list[str]]:
    """The ids on each page, following `next` links to the end."""
    pages: list[list[str]] = []
    r = await staff.get("AuditEvent", params=params)
    while True:
        assert r.status_code == 200, r.text
        bundle = r.json()
        pages.append([e["resource"]["id"] for e in bundle.get("entry", ())])
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            return pages
        r = await staff.get(following[0])


def ids_about(events: list[dict[str, Any]], pid: str) -> list[str]:
    return [e["id"] for e in events if patient_of(e) == f"Patient/{pid}"]


async def test_paging_a_patients_trail_both_ways(audit_app: FastAPI,
                                                 staff: httpx.AsyncClient) -> None:
    await seen(staff, "p1", 4)
    await seen(staff, "p2", 3)
    await seen(staff, "p1", 0)  # an update of p1 after p2's reads
    stored = await chain_events(audit_app)
    about_p1 = ids_about(stored, "p1")
    assert len(about_p1) == 6
    pages = await every_page(staff, {"patient": "Patient/p1", "_count": "4"})
    # the pages are live: the search of p1's trail is itself recorded in it, after them
    assert pages[0] == about_p1[:4] and pages[1][:2] == about_p1[4:]
    now = ids_about(await chain_events(audit_app), "p1")[::-1]
    newest_first = await every_page(staff, {"patient": "p1", "_count": "4", "_sort": "-date"})
    assert newest_first == [now[n:n + 4] for n in range(0, len(now), 4)]
    whole_log = await every_page(staff, {"_count": "5"})
    assert [i for page in whole_log for i in page][: len(stored)] == [e["id"] for e in stored]


async def test_filters_the_log_does_not_index_still_apply(audit_app: FastAPI,
                                                         staff: httpx.AsyncClient) -> None:
    await seen(staff, "p1", 2)
    stored = await chain_events(audit_app)
    reads = [e["id"] for e in stored if e["subtype"][0]["code"] == "read"]
    r = await staff.get("AuditEvent", params={"subtype": "read", "patient": "Patient/p1",
                                              "_total": "accurate"})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == reads
    assert r.json()["total"] == len(reads)
    r = await staff.get("AuditEvent", params={"_id": f"{reads[0]},{event_id(999)}"})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [reads[0]]
    r = await staff.get("AuditEvent", params={"outcome": "8"})  # no failures
    assert r.json()["total"] == 0


async def test_include_and_history(audit_app: FastAPI, staff: httpx.AsyncClient) -> None:
    await seen(staff, "p1", 1)
    r = await staff.get("AuditEvent", params={"patient": "Patient/p1",
                                              "_include": "AuditEvent:patient"})
    entries = r.json()["entry"]
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in entries}
    assert modes == {("AuditEvent", "match"), ("Patient", "include")}
    first = entries[0]["resource"]["id"]
    assert (await staff.get(f"AuditEvent/{first}/_history/1")).json()["id"] == first
    assert (await staff.get(f"AuditEvent/{first}/_history/2")).status_code == 404
    history = (await staff.get(f"AuditEvent/{first}/_history")).json()
    assert [e["resource"]["id"] for e in history["entry"]] == [first]
    type_history = (await staff.get("AuditEvent/_history", params={"_count": "2"})).json()
    newest = [e["id"] for e in await chain_events(audit_app)][::-1]
    # the newest record is that of this very request, stored after it answered
    assert [e["resource"]["id"] for e in type_history["entry"]] == newest[1:3]
    # AuditEvents are kept apart from the data's history and from multi-type searches
    system = (await staff.get("_history", params={"_count": "100"})).json()
    assert {e["resource"]["resourceType"] for e in system["entry"]} == {"Patient"}
    everything = (await staff.get("Patient/p1/*")).json()
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient"}


async def test_what_the_log_does_not_offer_is_refused(audit_app: FastAPI,
                                                      staff: httpx.AsyncClient) -> None:
    await seen(staff, "p1", 1)
    for params in ({"patient.name": "Doe"}, {"_has:AuditEvent:entity:action": "R"},
                   {"_revinclude": "Provenance:target"}, {"_sort": "action"}):
        path = "Patient" if any(k.startswith("_has") for k in params) else "AuditEvent"
        r = await staff.get(path, params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["issue"][0]["code"] == "not-supported"
    r = await staff.get("Patient", params={"_revinclude": "AuditEvent:patient"})
    assert r.status_code == 400 and "AuditEvent" in r.text


async def test_a_page_examines_a_bounded_part_of_the_log(
        audit_app: FastAPI, staff: httpx.AsyncClient, monkeypatch: Any) -> None:
    await seen(staff, "p1", 6)
    monkeypatch.setattr(view, "SCAN_LIMIT", 3)
    pages = await every_page(staff, {"subtype": "read", "_count": "10"})
    reads = [e["id"] for e in await chain_events(audit_app)
             if e["subtype"][0]["code"] == "read"]
    assert len(pages) > 2  # short pages with next links, not one long scan
    assert [i for page in pages for i in page][: len(reads)] == reads
