"""Availability templates -> Slots: weekly hours with breaks, holidays, one-off absences
and extra hours, time zones across DST, idempotent regeneration that never touches booked
Slots, and the periodic job."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.config import SchedulingSettings, Settings
from fhirpm.scheduling import availability, model
from tests.conftest import BASE, FHIR_JSON
from tests.scheduling.booking_world import booked, generate, patient, practice, slots

EMPTY = {"resourceType": "Parameters"}
BERLIN = availability.zone("Europe/Berlin", "test")


def _role_template(**extra: object) -> availability.Template:
    role = {"resourceType": "PractitionerRole", "id": "r", "availableTime": [
        {"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"], "availableStartTime": "09:00:00",
         "availableEndTime": "12:00:00"},
        {"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"], "availableStartTime": "13:00:00",
         "availableEndTime": "17:00:00"}], **extra}
    schedule = {"resourceType": "Schedule", "id": "s"}
    location = {"resourceType": "Location", "id": "l",
                "extension": [{"url": model.TIMEZONE, "valueCode": "Europe/Berlin"}]}
    return availability.template(schedule, [role], [location], default_zone="UTC",
                                 default_minutes=60)


def _hours(times: list[tuple[datetime, datetime]], day: date) -> list[str]:
    return [s.astimezone(BERLIN).strftime("%H:%M") for s, _ in times
            if s.astimezone(BERLIN).date() == day]


def test_weekly_hours_with_a_break_and_a_weekend() -> None:
    tpl = _role_template()
    times = availability.slot_times(tpl, date(2026, 6, 5), date(2026, 6, 7))  # Fri..Sun
    assert _hours(times, date(2026, 6, 5)) == ["09:00", "10:00", "11:00", "13:00", "14:00",
                                               "15:00", "16:00"]
    assert _hours(times, date(2026, 6, 6)) == [] and _hours(times, date(2026, 6, 7)) == []


def test_local_hours_hold_across_both_dst_changes() -> None:
    tpl = _role_template()
    spring = availability.slot_times(tpl, date(2026, 3, 27), date(2026, 3, 30))
    starts = {s.date(): s for s, _ in reversed(spring)}  # first slot of each UTC day
    assert starts[date(2026, 3, 27)] == datetime(2026, 3, 27, 8, tzinfo=UTC)  # CET +1
    assert starts[date(2026, 3, 30)] == datetime(2026, 3, 30, 7, tzinfo=UTC)  # CEST +2
    autumn = availability.slot_times(tpl, date(2026, 10, 23), date(2026, 10, 26))
    first = {s.date(): s for s, _ in reversed(autumn)}
    assert first[date(2026, 10, 23)] == datetime(2026, 10, 23, 7, tzinfo=UTC)
    assert first[date(2026, 10, 26)] == datetime(2026, 10, 26, 8, tzinfo=UTC)
    # every slot is a full hour of real time, also on the days around the change
    assert all(e - s == timedelta(hours=1) for s, e in spring + autumn)


def test_an_all_day_window_on_the_short_night_has_23_hours() -> None:
    role = {"resourceType": "PractitionerRole", "id": "r",
            "availableTime": [{"daysOfWeek": ["sun"], "allDay": True}]}
    tpl = availability.template({"resourceType": "Schedule", "id": "s",
                                 "extension": [{"url": model.TIMEZONE,
                                                "valueCode": "Europe/Berlin"}]},
                                [role], [], default_zone="UTC", default_minutes=60)
    assert len(availability.slot_times(tpl, date(2026, 3, 29), date(2026, 3, 29))) == 23
    assert len(availability.slot_times(tpl, date(2026, 10, 25), date(2026, 10, 25))) == 25


def test_holidays_absences_and_extra_hours() -> None:
    tpl = _role_template(
        notAvailable=[{"description": "Christmas", "during": {"start": "2026-12-24",
                                                               "end": "2026-12-25"}},
                      {"description": "Dentist", "during": {
                          "start": "2026-12-22T14:00:00+01:00",
                          "end": "2026-12-22T15:30:00+01:00"}}],
        extension=[{"url": model.AVAILABLE_EXTRA, "valuePeriod": {
            "start": "2026-12-19T10:00:00+01:00", "end": "2026-12-19T12:00:00+01:00"}}])
    times = availability.slot_times(tpl, date(2026, 12, 19), date(2026, 12, 25))
    assert _hours(times, date(2026, 12, 19)) == ["10:00", "11:00"]  # a Saturday, extra
    assert _hours(times, date(2026, 12, 22)) == ["09:00", "10:00", "11:00", "13:00",
                                                 "15:30"]
    assert _hours(times, date(2026, 12, 24)) == [] and _hours(times, date(2026, 12, 25)) == []
    assert len(_hours(times, date(2026, 12, 23))) == 7


def test_a_bad_zone_or_slot_length_is_a_business_rule_error() -> None:
    from fhirpm.errors import Category, FhirError

    with pytest.raises(FhirError) as err:
        availability.zone("Mars/Olympus", "Location/x timezone")
    assert err.value.category is Category.BUSINESS_RULE
    with pytest.raises(FhirError):
        availability.slot_minutes({"id": "s", "extension": [{
            "url": model.SLOT_LENGTH, "valueDuration": {"value": 0, "code": "min"}}]}, 15)


async def test_generation_is_idempotent_and_leaves_booked_slots(
        client: httpx.AsyncClient) -> None:
    world = await practice(client)
    sid = world["schedule"]["id"]
    first = await generate(client, sid, "2026-12-07", "2026-12-11")  # Mon..Fri
    assert first["created"] == 5 * 14 and first["updated"] == first["removed"] == 0
    made = await slots(client, sid)
    assert len(made) == 70 and made[0]["start"] == "2026-12-07T09:00:00+01:00"
    assert made[0]["id"] == f"{sid}-202612070800" and made[0]["status"] == "free"
    assert made[0]["serviceType"] == world["schedule"]["serviceType"]

    again = await generate(client, sid, "2026-12-07", "2026-12-11")
    assert again["created"] == 0 and again["unchanged"] == 70
    assert {s["meta"]["versionId"] for s in await slots(client, sid)} == {"1"}

    # book one slot on Tuesday, then close Tuesday: its free slots go, the booked one stays
    pid = await patient(client)
    tuesday = [s for s in made if s["start"].startswith("2026-12-08")]
    r = await client.post("Appointment", json=booked(tuesday[0]["id"], pid),
                          headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    role = world["role"]
    role["notAvailable"] = [{"description": "Training", "during": {"start": "2026-12-08",
                                                                   "end": "2026-12-08"}}]
    assert (await client.put(f"PractitionerRole/{role['id']}", json=role,
                             headers=FHIR_JSON)).status_code == 200
    closed = await generate(client, sid, "2026-12-07", "2026-12-11")
    assert closed["removed"] == 13 and closed["kept"] == 1 and closed["created"] == 0
    left = await slots(client, sid, start="ge2026-12-08T00:00:00+01:00")
    assert [s["id"] for s in left if s["start"].startswith("2026-12-08")] == [
        tuesday[0]["id"]]
    assert left[0]["status"] == "busy"


async def test_a_longer_slot_length_rewrites_free_slots(client: httpx.AsyncClient) -> None:
    world = await practice(client, minutes=30)
    sid = world["schedule"]["id"]
    await generate(client, sid, "2026-12-07", "2026-12-07")
    schedule = world["schedule"]
    schedule["extension"][0]["valueDuration"]["value"] = 60
    assert (await client.put(f"Schedule/{sid}", json=schedule,
                             headers=FHIR_JSON)).status_code == 200
    counts = await generate(client, sid, "2026-12-07", "2026-12-07")
    assert counts["updated"] == 7 and counts["removed"] == 7  # on-the-hour kept, :30 gone
    assert [s["end"][11:16] for s in await slots(client, sid)] == [
        "10:00", "11:00", "12:00", "14:00", "15:00", "16:00", "17:00"]


async def test_staff_see_who_works_when(client: httpx.AsyncClient) -> None:
    world = await practice(client)
    await generate(client, world["schedule"]["id"], "2026-12-07", "2026-12-07")
    role = world["role"]["id"]
    r = await client.get("Schedule", params={"actor": f"PractitionerRole/{role}"})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [world["schedule"]["id"]]
    r = await client.get("Slot", params={
        "schedule.actor": f"PractitionerRole/{role}", "start": "2026-12-07", "_count": "100"})
    assert r.status_code == 200 and len(r.json()["entry"]) == 14


async def test_bad_inputs_are_operation_outcomes(client: httpx.AsyncClient) -> None:
    world = await practice(client)
    sid = world["schedule"]["id"]
    for params, status in (({"start": "tomorrow"}, 400),
                           ({"start": "2026-12-10", "end": "2026-12-01"}, 400),
                           ({"start": "2026-01-01", "end": "2028-01-01"}, 403)):
        r = await client.post(f"Schedule/{sid}/$generate-slots", params=params, json=EMPTY,
                              headers=FHIR_JSON)
        assert r.status_code == status and r.json()["resourceType"] == "OperationOutcome"
    r = await client.post("Schedule/nope/$generate-slots", json=EMPTY, headers=FHIR_JSON)
    assert r.status_code == 404
    r = await client.post("Patient/$generate-slots", json=EMPTY, headers=FHIR_JSON)
    assert r.status_code == 400


@pytest.fixture
async def short_horizon_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'fhirpm.db'}", base_url=BASE,
                        log_json=False, scheduling=SchedulingSettings(horizon_days=6))
    application = create_app(settings)
    # the job runs when the test says so, not at startup over half-made Schedules
    async with application.state.jobs.held(), application.router.lifespan_context(application):
        yield application


async def test_the_job_rolls_the_horizon_for_every_schedule(
        short_horizon_app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    from tests.bearer import staff_headers

    caplog.set_level(logging.INFO, logger="fhirpm.scheduling")  # as deployed: its line too
    app = short_horizon_app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE + "/",
                                 headers=await staff_headers(app)) as client:
        one = await practice(client)
        two = await practice(client, minutes=60)
        assert await app.state.jobs.run_now("scheduling.generate-slots", force=True)
        # a week (today + 6 days) holds exactly five working days
        assert len(await slots(client, one["schedule"]["id"])) == 5 * 14
        assert len(await slots(client, two["schedule"]["id"])) == 5 * 7
        before = await slots(client, one["schedule"]["id"])
        assert await app.state.jobs.run_now("scheduling.generate-slots", force=True)
        # nothing rewritten; a run after midnight (UTC) may add the next day's Slots at the end
        after = await slots(client, one["schedule"]["id"])
        assert after[:len(before)] == before
    [line] = [r for r in caplog.records if r.getMessage() == "slots generated"][-1:]
    assert line.slots["updated"] == line.slots["removed"] == 0  # type: ignore[attr-defined]


async def test_generated_slots_across_the_spring_change(client: httpx.AsyncClient) -> None:
    world = await practice(client)
    sid = world["schedule"]["id"]
    await generate(client, sid, "2026-03-27", "2026-03-30")  # Fri .. Mon, change on Sunday
    made = await slots(client, sid)
    firsts = {s["start"][:10]: s for s in reversed(made)}
    assert firsts["2026-03-27"]["start"] == "2026-03-27T09:00:00+01:00"
    assert firsts["2026-03-27"]["id"] == f"{sid}-202603270800"
    assert firsts["2026-03-30"]["start"] == "2026-03-30T09:00:00+02:00"
    assert firsts["2026-03-30"]["id"] == f"{sid}-202603300700"
    assert len(made) == 28
