"""Appointment/$hold: a hold re-checks availability, keeps the Slots busy-tentative until
its expiry, is booked in place by $book, and is released by the expiry job (called with a
clock, or through jobs.run_now), never by waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.config import SchedulingSettings, Settings
from fhirpm.scheduling import model
from fhirpm.scheduling.booking import release_expired
from tests.bearer import bearer, mint, staff_headers
from tests.conftest import BASE, FHIR_JSON
from tests.scheduling.booking_world import booked, generate, patient, practice

DAY = "2026-12-07"
SCOPES = "patient/Appointment.cruds patient/Slot.rs patient/Schedule.rs"


async def _proposals(client: httpx.AsyncClient, world: dict[str, Any],
                     **params: str) -> list[dict[str, Any]]:
    r = await client.get("Appointment/$find", params={
        "practitioner": f"Practitioner/{world['doctor']['id']}",
        "start": f"{DAY}T00:00:00+01:00", "end": f"{DAY}T23:00:00+01:00", **params})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json()["entry"]]


async def _hold(client: httpx.AsyncClient, proposal: dict[str, Any],
                headers: dict[str, str] | None = None, **extra: str) -> httpx.Response:
    parameters = [{"name": "appointment", "resource": proposal}]
    parameters += [{"name": k, "valueString": v} for k, v in extra.items()]
    return await client.post("Appointment/$hold", json={"resourceType": "Parameters",
                                                        "parameter": parameters},
                             headers={**FHIR_JSON, **(headers or {})})


def _stored(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "collection", body
    return body["entry"][0]["resource"]


async def _slot(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    return (await client.get(reference)).json()


@pytest.fixture
async def world(client: httpx.AsyncClient) -> dict[str, Any]:
    made = await practice(client)
    await generate(client, made["schedule"]["id"], DAY, DAY)
    return made


async def test_a_hold_keeps_the_slot_until_it_expires(client: httpx.AsyncClient,
                                                      app: FastAPI,
                                                      world: dict[str, Any]) -> None:
    me, other = await patient(client, "Me"), await patient(client, "Other")
    mine = bearer(await mint(app.state.auth, SCOPES, patient=me))
    theirs = bearer(await mint(app.state.auth, SCOPES, patient=other))
    proposal = (await _proposals(client, world))[0]
    before = datetime.now(UTC)
    r = await _hold(client, proposal, mine)
    assert r.status_code == 201, r.text
    held = _stored(r)
    assert held["status"] == "pending" and model.is_hold(held)
    expires = datetime.fromisoformat(
        model.extension(held, model.HOLD_EXPIRES)["valueInstant"].replace("Z", "+00:00"))
    assert before + timedelta(minutes=9) < expires <= datetime.now(UTC) + timedelta(minutes=10)
    assert {"reference": f"Patient/{me}"} in [p["actor"] for p in held["participant"]]
    slot = await _slot(client, proposal["slot"][0]["reference"])
    assert slot["status"] == "busy-tentative" and model.occupants(slot) == {held["id"]: True}

    # the slot is gone from $find, and a second hold on it is refused
    assert proposal["start"] not in [p["start"] for p in await _proposals(client, world)]
    r = await _hold(client, proposal, theirs)
    assert r.status_code == 409 and r.json()["resourceType"] == "OperationOutcome"

    repo = app.state.interactions.repo
    assert await release_expired(repo, datetime.now(UTC)) == 0  # not yet
    assert await release_expired(repo, expires) == 1
    released = (await client.get(f"Appointment/{held['id']}")).json()
    assert released["status"] == "cancelled"
    assert released["cancelationReason"]["coding"][0]["code"] == "hold-expired"
    slot = await _slot(client, proposal["slot"][0]["reference"])
    assert slot["status"] == "free" and not model.occupants(slot)
    assert await release_expired(repo, expires + timedelta(hours=1)) == 0  # done once

    r = await _hold(client, proposal, theirs)  # free again for the next patient
    assert r.status_code == 201


async def test_booking_a_hold_keeps_its_slots(client: httpx.AsyncClient, app: FastAPI,
                                              world: dict[str, Any]) -> None:
    me = await patient(client)
    proposal = (await _proposals(client, world, duration="60"))[0]
    assert len(proposal["slot"]) == 2
    held = _stored(await _hold(client, proposal, patient=f"Patient/{me}"))
    for ref in proposal["slot"]:
        assert (await _slot(client, ref["reference"]))["status"] == "busy-tentative"
    r = await client.post("Appointment/$book", json={
        "resourceType": "Parameters", "parameter": [{"name": "appointment",
                                                      "resource": held}]},
                          headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    done = _stored(r)
    assert done["id"] == held["id"] and done["status"] == "booked"
    assert not model.is_hold(done) and model.extension(done, model.HOLD_EXPIRES) is None
    assert [p["status"] for p in done["participant"]] == ["accepted", "accepted"]
    for ref in proposal["slot"]:
        slot = await _slot(client, ref["reference"])
        assert slot["status"] == "busy" and model.occupants(slot) == {done["id"]: False}
    far = datetime.now(UTC) + timedelta(days=1)
    assert await release_expired(app.state.interactions.repo, far) == 0


async def test_a_multi_slot_hold_takes_all_or_none(client: httpx.AsyncClient,
                                                   world: dict[str, Any]) -> None:
    a, b = await patient(client, "A"), await patient(client, "B")
    proposal = (await _proposals(client, world, duration="60"))[0]
    second = proposal["slot"][1]["reference"].split("/")[1]
    assert (await client.post("Appointment", json=booked(second, b),
                              headers=FHIR_JSON)).status_code == 201
    r = await _hold(client, proposal, patient=f"Patient/{a}")
    assert r.status_code == 409
    first = await _slot(client, proposal["slot"][0]["reference"])
    assert first["status"] == "free" and first["meta"]["versionId"] == "1"
    r = await client.get("Appointment", params={"patient": f"Patient/{a}"})
    assert "entry" not in r.json()


async def test_an_expired_hold_books_again_only_if_still_free(
        client: httpx.AsyncClient, app: FastAPI, world: dict[str, Any]) -> None:
    a, b = await patient(client, "A"), await patient(client, "B")
    repo = app.state.interactions.repo
    later = datetime.now(UTC) + timedelta(minutes=11)
    proposals = await _proposals(client, world)
    book = {"resourceType": "Parameters", "parameter": [{"name": "appointment"}]}

    held = _stored(await _hold(client, proposals[0], patient=f"Patient/{a}"))
    assert await release_expired(repo, later) == 1
    book["parameter"][0]["resource"] = held
    r = await client.post("Appointment/$book", json=book, headers=FHIR_JSON)
    assert r.status_code == 200 and _stored(r)["status"] == "booked"

    held = _stored(await _hold(client, proposals[1], patient=f"Patient/{a}"))
    assert await release_expired(repo, later) == 1
    slot_id = proposals[1]["slot"][0]["reference"].split("/")[1]
    assert (await client.post("Appointment", json=booked(slot_id, b),
                              headers=FHIR_JSON)).status_code == 201
    book["parameter"][0]["resource"] = held
    r = await client.post("Appointment/$book", json=book, headers=FHIR_JSON)
    assert r.status_code == 409
    assert (await client.get(f"Appointment/{held['id']}")).json()["status"] == "cancelled"


@pytest.fixture
async def instant_expiry_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'fhirpm.db'}", base_url=BASE,
                        log_json=False, scheduling=SchedulingSettings(hold_minutes=0))
    application = create_app(settings)
    # holds expire at once here: the release job must run only when a test runs it
    async with application.state.jobs.held(), application.router.lifespan_context(application):
        yield application


async def test_the_release_job_frees_expired_holds(instant_expiry_app: FastAPI) -> None:
    app = instant_expiry_app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE + "/",
                                 headers=await staff_headers(app)) as client:
        made = await practice(client)
        await generate(client, made["schedule"]["id"], DAY, DAY)
        pid = await patient(client)
        proposal = (await _proposals(client, made))[0]
        held = _stored(await _hold(client, proposal, patient=f"Patient/{pid}"))
        assert await app.state.jobs.run_now("scheduling.release-holds", force=True)
        assert (await client.get(f"Appointment/{held['id']}")).json()["status"] == "cancelled"
        slot = await _slot(client, proposal["slot"][0]["reference"])
        assert slot["status"] == "free"


async def test_a_booking_releases_an_expired_hold_without_the_job(
        instant_expiry_app: FastAPI) -> None:
    app = instant_expiry_app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE + "/",
                                 headers=await staff_headers(app)) as client:
        made = await practice(client)
        await generate(client, made["schedule"]["id"], DAY, DAY)
        a, b = await patient(client, "A"), await patient(client, "B")
        proposal = (await _proposals(client, made))[0]
        held = _stored(await _hold(client, proposal, patient=f"Patient/{a}"))
        slot_ref = proposal["slot"][0]["reference"]
        assert (await _slot(client, slot_ref))["status"] == "busy-tentative"
        r = await client.post("Appointment/$book", json={
            "resourceType": "Parameters", "parameter": [
                {"name": "appointment", "resource": proposal},
                {"name": "patient", "valueReference": {"reference": f"Patient/{b}"}}]},
            headers=FHIR_JSON)
        assert r.status_code == 201, r.text
        winner = _stored(r)
        expired = (await client.get(f"Appointment/{held['id']}")).json()
        assert expired["status"] == "cancelled"
        assert expired["cancelationReason"]["coding"][0]["code"] == "hold-expired"
        slot = await _slot(client, slot_ref)
        assert slot["status"] == "busy" and model.occupants(slot) == {winner["id"]: False}


async def test_bad_hold_requests(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    pid = await patient(client)
    r = await client.post("Appointment/$hold", json={"resourceType": "Parameters"},
                          headers=FHIR_JSON)
    assert r.status_code == 400
    no_slot = {"resourceType": "Appointment", "status": "proposed",
               "participant": [{"actor": {"reference": f"Patient/{pid}"},
                                "status": "needs-action"}]}
    assert (await _hold(client, no_slot)).status_code == 422
    proposal = (await _proposals(client, world))[0]
    assert (await _hold(client, proposal)).status_code == 400  # for which patient?
    r = await client.get("Appointment/$hold")
    assert r.status_code == 405
    r = await client.post("Appointment/x/$hold", json={"resourceType": "Parameters"},
                          headers=FHIR_JSON)
    assert r.status_code == 400
