"""Slots from availability: `Schedule/[id]/$generate-slots`, `Schedule/$generate-slots`
(every Schedule) and the periodic job that rolls the horizon forward.

Generation is idempotent. A generated Slot's id is derived from its Schedule and start
(`<schedule>-<yyyymmddhhmm UTC>`, hashed when longer than 64), and it carries the
identifier `model.GENERATED|Schedule/<id>|<start>`, so a rerun finds the same Slots and
writes nothing unless the template changed (an identical PUT stores no new version).
Only free, unoccupied Slots are rewritten or removed; a booked, held or otherwise busy Slot
is never touched, and neither is a Slot someone made by hand (no generated identifier).
Each decision is taken inside the unit of work that writes it, so a booking racing the
generator either lands first (its Slot is then left alone) or conflicts and retries.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from fhirpm.scheduling import availability, lookup, model
from fhirpm.scheduling.params import Inputs, parameters

if TYPE_CHECKING:
    from fhirpm.config import SchedulingSettings
    from fhirpm.jobs import Jobs
    from fhirpm.repository.service import Repository
    from fhirpm.storage.port import ResourceVersion, UnitOfWork

log = logging.getLogger("fhirpm.scheduling")

DEFINITION = "http://fhirpm.org/fhir/OperationDefinition/Schedule-generate-slots"
JOB = "scheduling.generate-slots"
BATCH = 200  # writes per unit of work
MAX_DAYS = 400  # most days one call may generate
GROUP = 10  # Schedules whose existing Slots one search reads (generate_all)


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    kept: int = 0  # existing Slots left alone: booked, held, busy or made by hand

    def add(self, other: Counts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


def slot_id(schedule_id: str, start: datetime) -> str:
    stamp = start.astimezone(UTC).strftime("%Y%m%d%H%M")
    plain = f"{schedule_id}-{stamp}"
    if len(plain) <= 64:
        return plain
    return "g-" + hashlib.sha256(f"{schedule_id}|{stamp}".encode()).hexdigest()[:40]


async def _resolve(repo: Repository, schedule: dict[str, Any]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(actors ordered PractitionerRole, HealthcareService, Location, other; their
    Locations, a PractitionerRole's own first)."""
    order = {"PractitionerRole": 0, "HealthcareService": 1, "Location": 2}
    actors: list[dict[str, Any]] = []
    for ref in schedule.get("actor") or ():
        found = await _read_ref(repo, ref.get("reference"))
        if found is not None:
            actors.append(found)
    actors.sort(key=lambda a: order.get(a["resourceType"], 3))
    own: list[dict[str, Any]] = []  # the PractitionerRole's Locations come first
    for actor in actors:
        if actor["resourceType"] == "PractitionerRole":
            for ref in actor.get("location") or ():
                found = await _read_ref(repo, ref.get("reference"))
                if found is not None and found["resourceType"] == "Location":
                    own.append(found)
    return actors, own + [a for a in actors if a["resourceType"] == "Location"]


async def _read_ref(repo: Repository, reference: Any) -> dict[str, Any] | None:
    if not isinstance(reference, str) or reference.count("/") < 1:
        return None
    type_, id_ = reference.split("/_history/")[0].rstrip("/").split("/")[-2:]
    if type_ not in ("PractitionerRole", "HealthcareService", "Location", "Practitioner"):
        return None
    found = await repo.store.read(type_, id_)
    return jsonio.loads(found.body) if found is not None and not found.deleted else None


def build_slot(schedule: dict[str, Any], start: datetime, end: datetime,
               tz: Any) -> dict[str, Any]:
    """The generated Slot of `schedule` for [start, end) (times written in local offset)."""
    sid = schedule["id"]
    slot: dict[str, Any] = {"resourceType": "Slot", "id": slot_id(sid, start)}
    capacity = model.extension(schedule, model.CAPACITY)
    if capacity is not None:
        slot["extension"] = [capacity]
    slot["identifier"] = [{"system": model.GENERATED,
                           "value": f"Schedule/{sid}|{start.astimezone(UTC).isoformat()}"}]
    for name in ("serviceCategory", "serviceType", "specialty"):
        if schedule.get(name):
            slot[name] = schedule[name]
    slot["schedule"] = {"reference": f"Schedule/{sid}"}
    slot["status"] = "free"
    slot["start"] = start.astimezone(tz).isoformat()
    slot["end"] = end.astimezone(tz).isoformat()
    return slot


def _same(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """A stored Slot already as generated (free, unoccupied, same content): the usual
    case of an hourly run, decided without opening a unit of work."""
    return {k: v for k, v in stored.items() if k != "meta"} == wanted


def _generated(slot: dict[str, Any]) -> bool:
    return any(i.get("system") == model.GENERATED for i in slot.get("identifier") or ())


def _untouched(current: ResourceVersion | None) -> bool:
    """A Slot generation must leave alone (checked again inside the writing unit)."""
    return current is not None and not current.deleted and _occupied(
        jsonio.loads(current.body))


def _occupied(slot: dict[str, Any]) -> bool:
    """Occupied, or not free: booked, held, or marked busy by someone."""
    return slot.get("status") != "free" or bool(model.occupants(slot))


async def generate(repo: Repository, schedule_id: str, first: date, last: date,
                   settings: SchedulingSettings,
                   found: dict[str, dict[str, Any]] | None = None) -> Counts:
    """Make Schedule/`schedule_id`'s Slots on local days first..last match its template.
    `found`: its Slots around those days by id, already searched (generate_all)."""
    schedule = jsonio.loads((await repo.read("Schedule", schedule_id)).body)
    actors, locations = await _resolve(repo, schedule)
    tpl = availability.template(schedule, actors, locations, default_zone=settings.timezone,
                                default_minutes=settings.default_slot_minutes)
    times = availability.slot_times(tpl, first, last) if schedule.get("active", True) else []
    desired = {s["id"]: s for s in (build_slot(schedule, a, b, tpl.zone) for a, b in times)}
    lo = availability.local(first, time(0), tpl.zone)
    hi = availability.local(last + timedelta(days=1), time(0), tpl.zone)
    if found is None:
        found = {v.id: jsonio.loads(v.body) for v in await lookup.slots_starting(
            repo, [("schedule", f"Schedule/{schedule_id}")], lo, hi)}
    bodies = {i: body for i, body in found.items() if lo <= _starts(body) < hi}
    stale = [i for i, body in bodies.items() if i not in desired and _generated(body)]
    same = {i for i, body in bodies.items() if i in desired and _same(body, desired[i])}
    busy = {i for i, body in bodies.items() if _occupied(body)}  # never rewritten
    counts = Counts(kept=len(busy | (bodies.keys() - desired.keys() - set(stale))),
                    unchanged=len(same))
    work: list[tuple[str, dict[str, Any] | None]] = [(i, None) for i in stale
                                                     if i not in busy]
    work += [(i, slot) for i, slot in desired.items() if i not in same and i not in busy]
    for n in range(0, len(work), BATCH):
        async with repo.unit(None) as unit:
            for id_, slot in work[n:n + BATCH]:
                await _apply(repo, unit, id_, slot, counts)
    return counts


async def _apply(repo: Repository, unit: UnitOfWork, id_: str, slot: dict[str, Any] | None,
                 counts: Counts) -> None:
    current = await unit.current("Slot", id_)
    if _untouched(current):
        counts.kept += 1
    elif slot is None:
        await repo.delete("Slot", id_, uow=unit)
        counts.removed += 1
    elif current is None or current.deleted:
        await repo.update("Slot", id_, slot, uow=unit)
        counts.created += 1
    else:
        result = await repo.replace(unit, current, slot, "PUT")
        if result.changed:
            counts.updated += 1
        else:
            counts.unchanged += 1


async def generate_all(repo: Repository, first: date, last: date,
                       settings: SchedulingSettings) -> Counts:
    """Every Schedule (inactive ones lose their free generated Slots). Their existing Slots
    are searched GROUP Schedules at a time, one search per piece of the days for the group
    (a day wider on each side: zones differ), not one per piece per Schedule."""
    total = Counts()
    ids = [v.id for v in await lookup.search(repo, "Schedule", [], everything=True)]
    lo = datetime.combine(first - timedelta(days=1), time(0), UTC)
    hi = datetime.combine(last + timedelta(days=2), time(0), UTC)
    for n in range(0, len(ids), GROUP):
        group = ids[n:n + GROUP]
        refs = ",".join(f"Schedule/{i}" for i in group)
        by_schedule: dict[str, dict[str, dict[str, Any]]] = {i: {} for i in group}
        for version in await lookup.slots_starting(repo, [("schedule", refs)], lo, hi):
            body = jsonio.loads(version.body)
            owner = model.local_id(body["schedule"].get("reference"), "Schedule")
            by_schedule.setdefault(owner or "", {})[version.id] = body
        for schedule_id in group:
            try:
                total.add(await generate(repo, schedule_id, first, last, settings,
                                         by_schedule[schedule_id]))
            except FhirError as err:  # one broken template must not stop the others
                log.warning("slots of Schedule/%s not generated: %s", schedule_id,
                            err.diagnostics, extra={"schedule": schedule_id})
    return total


def _starts(slot: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(slot.get("start", "1900-01-01T00:00:00+00:00"))
                                  .replace("Z", "+00:00"))


def default_range(settings: SchedulingSettings, today: date) -> tuple[date, date]:
    return today, today + timedelta(days=settings.horizon_days)


class GenerateSlots:
    """The operation and the job, sharing the settings and the clock."""

    def __init__(self, settings: SchedulingSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.clock = clock

    async def operation(self, ix: Interactions, req: FhirRequest, type: str | None,
                        id: str | None) -> FhirResponse:
        inputs = Inputs(req)
        first, last = default_range(self.settings, self.clock().date())
        first = inputs.day("start") or first
        last = inputs.day("end") or last
        if last < first:
            raise FhirError(Category.INVALID, "end is before start", expression=("end",))
        if (last - first).days > MAX_DAYS:
            raise FhirError(Category.TOO_COSTLY, f"At most {MAX_DAYS} days per call",
                            expression=("end",))
        if id is not None:
            counts = await generate(ix.repo, id, first, last, self.settings)
        else:
            counts = await generate_all(ix.repo, first, last, self.settings)
        return FhirResponse(200, jsonio.dumps(parameters(**asdict(counts))))

    async def job(self, repo: Repository) -> None:
        first, last = default_range(self.settings, self.clock().date())
        counts = await generate_all(repo, first, last, self.settings)
        # nested: a top-level `created` would clash with the LogRecord attribute (KeyError)
        log.info("slots generated", extra={"job": JOB, "slots": asdict(counts)})

    def install(self, interactions: Interactions, jobs: Jobs) -> None:
        register(interactions, OperationSpec(
            "generate-slots", DEFINITION, self.operation, type=True, instance=True,
            types=("Schedule",), affects_state=True,
            documentation="Generate free Slots from the Schedule's availability template "
                          "(start, end: dates; default today to the horizon)"))
        repo = interactions.repo
        jobs.every(JOB, self.settings.generate_slots_seconds, lambda: self.job(repo))
