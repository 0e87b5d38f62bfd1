"""Availability templates: when a Schedule's actors see patients, read from FHIR.

A Schedule's availability comes from its actors (docs/scheduling.md, "Availability"):

    weekly hours   PractitionerRole.availableTime, else HealthcareService.availableTime,
                   else Location.hoursOfOperation (the first actor that has any). Breaks are
                   gaps between a day's entries (08:00-12:00 and 13:00-17:00).
    closures       notAvailable.during of every PractitionerRole/HealthcareService actor,
                   and the `not-available` extension (valuePeriod) on the Schedule and its
                   Locations: holidays (a date-only period is whole local days) and one-off
                   absences (a period with times)
    extra hours    the `available-extra` extension (valuePeriod) on the Schedule or an actor
    time zone      the `timezone` extension (IANA valueCode) on the Schedule, else on its
                   Location (an actor, or the PractitionerRole's first location), else the
                   `scheduling.timezone` setting
    slot length    the `slot-length` extension (valueDuration) on the Schedule, else the
                   `scheduling.default_slot_minutes` setting
    horizon        Schedule.planningHorizon bounds what is generated, when given

Local wall-clock hours become instants for each date with that date's UTC offset, so a
09:00 start stays 09:00 across a DST change; a window edge inside a DST gap moves forward
by the gap's length. Everything here is pure: `Template` from resources, `slot_times`
from a Template.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhirpm.errors import Category, FhirError
from fhirpm.scheduling import model

DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
Interval = tuple[datetime, datetime]  # aware, UTC, [start, end)


@dataclass
class Template:
    zone: ZoneInfo
    slot_minutes: int
    weekly: dict[int, list[tuple[time, time | None]]] = field(default_factory=dict)
    closed: list[Interval] = field(default_factory=list)
    extra: list[Interval] = field(default_factory=list)
    horizon: Interval | None = None


def zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FhirError(Category.BUSINESS_RULE, f"{where}: {name!r} is not an IANA time "
                        "zone (e.g. Europe/Berlin)") from None


def zone_of(schedule: dict[str, Any], locations: Iterable[dict[str, Any]],
            default: str) -> ZoneInfo:
    """The Schedule's own zone, else its first Location's, else `default`."""
    for resource, kind in [(schedule, "Schedule"), *((loc, "Location") for loc in locations)]:
        found = model.extension(resource, model.TIMEZONE)
        if found and found.get("valueCode"):
            return zone(found["valueCode"], f"{kind}/{resource.get('id')} timezone")
    return zone(default, "the scheduling.timezone setting")


def slot_minutes(schedule: dict[str, Any], default: int) -> int:
    found = model.extension(schedule, model.SLOT_LENGTH)
    if found is None:
        return default
    duration = found.get("valueDuration") or {}
    value, unit = duration.get("value"), duration.get("code") or duration.get("unit")
    factor = {"min": 1, "h": 60}.get(unit or "min")
    if not isinstance(value, int | float) or factor is None or value * factor < 1:
        raise FhirError(Category.BUSINESS_RULE, f"Schedule/{schedule.get('id')}: the "
                        "slot-length extension needs a valueDuration in min or h of at "
                        "least one minute", expression=("Schedule.extension",))
    return int(value * factor)


def template(schedule: dict[str, Any], actors: list[dict[str, Any]],
             locations: list[dict[str, Any]], *, default_zone: str,
             default_minutes: int) -> Template:
    """The availability of `schedule` given its resolved actors and their Locations."""
    tz = zone_of(schedule, locations, default_zone)
    out = Template(tz, slot_minutes(schedule, default_minutes))
    for actor in actors:
        weekly = _weekly(actor)
        if weekly:
            out.weekly = weekly
            break
    for resource in [schedule, *actors, *locations]:
        for entry in resource.get("notAvailable") or ():
            if entry.get("during"):
                out.closed.append(period(entry["during"], tz))
        out.closed += [period(e.get("valuePeriod") or {}, tz)
                       for e in model.extensions(resource, model.CLOSED)]
    for resource in [schedule, *actors]:
        out.extra += [period(e.get("valuePeriod") or {}, tz)
                      for e in model.extensions(resource, model.AVAILABLE_EXTRA)]
    if schedule.get("planningHorizon"):
        out.horizon = period(schedule["planningHorizon"], tz)
    return out


def _weekly(actor: dict[str, Any]) -> dict[int, list[tuple[time, time | None]]]:
    """weekday -> local [start, end) windows (end None: midnight) of one actor."""
    entries = actor.get("availableTime") or actor.get("hoursOfOperation") or ()
    out: dict[int, list[tuple[time, time | None]]] = {}
    for entry in entries:
        if entry.get("allDay"):
            window: tuple[time, time | None] = (time(0), None)
        else:
            start = entry.get("availableStartTime") or entry.get("openingTime")
            end = entry.get("availableEndTime") or entry.get("closingTime")
            if not start or not end:
                continue
            begin, finish = _time(start), _time(end)
            window = (begin, finish if finish > begin else None)
        for day in entry.get("daysOfWeek") or ():
            if day in DAYS:
                out.setdefault(DAYS[day], []).append(window)
    for windows in out.values():
        windows.sort(key=lambda w: w[0])
    return out


def _time(text: str) -> time:
    return time.fromisoformat(text[:8])


_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


def period(value: dict[str, Any], tz: ZoneInfo) -> Interval:
    """A FHIR Period as UTC instants; a date (or month, year) is whole local days, an
    open end runs far into the future."""
    start = _instant(value.get("start"), tz, end=False) or datetime(1900, 1, 1, tzinfo=UTC)
    end = _instant(value.get("end"), tz, end=True) or datetime(9999, 1, 1, tzinfo=UTC)
    return start, end


def _instant(text: Any, tz: ZoneInfo, *, end: bool) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    partial = _PARTIAL.match(text)
    if partial:
        year, month, day = partial.groups()
        first = date(int(year), int(month or 1), int(day or 1))
        if end:  # the end of the day, month or year named
            first = (first + timedelta(days=1) if day else
                     date(first.year + (month is not None and first.month == 12),
                          first.month % 12 + 1, 1) if month else date(first.year + 1, 1, 1))
        return local(first, time(0), tz)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """`day` at wall-clock `at` in `tz`, as a UTC instant. A time inside a DST gap is read
    with the offset before the change (PEP 495 fold=0), so it moves forward by the gap:
    02:30 on a spring-forward night is 03:30; a repeated autumn hour is its first pass."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def windows(tpl: Template, day: date) -> list[Interval]:
    """The open intervals of one local day: weekly hours and extra hours, minus closures."""
    opened: list[Interval] = []
    for start, end in tpl.weekly.get(day.weekday(), ()):
        finish = local(day, end, tpl.zone) if end else local(day + timedelta(days=1),
                                                               time(0), tpl.zone)
        opened.append((local(day, start, tpl.zone), finish))
    lo, hi = local(day, time(0), tpl.zone), local(day + timedelta(days=1), time(0), tpl.zone)
    opened += [(max(s, lo), min(e, hi)) for s, e in tpl.extra if s < hi and e > lo]
    cut = list(tpl.closed)
    if tpl.horizon is not None:
        cut += [(datetime(1900, 1, 1, tzinfo=UTC), tpl.horizon[0]),
                (tpl.horizon[1], datetime(9999, 1, 1, tzinfo=UTC))]
    return subtract(merge(opened), cut)


def merge(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[0] < i[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def subtract(intervals: list[Interval], cuts: list[Interval]) -> list[Interval]:
    for cut_start, cut_end in cuts:
        kept: list[Interval] = []
        for start, end in intervals:
            if cut_end <= start or cut_start >= end:
                kept.append((start, end))
                continue
            if start < cut_start:
                kept.append((start, cut_start))
            if cut_end < end:
                kept.append((cut_end, end))
        intervals = kept
    return intervals


def slot_times(tpl: Template, first: date, last: date) -> list[Interval]:
    """Slots of `tpl.slot_minutes` over local days first..last, in order: each open
    interval is cut from its start; a remainder shorter than a slot is left out."""
    step = timedelta(minutes=tpl.slot_minutes)
    out: list[Interval] = []
    day = first
    while day <= last:
        for start, end in windows(tpl, day):
            while start + step <= end:
                out.append((start, start + step))
                start += step
        day += timedelta(days=1)
    return out
