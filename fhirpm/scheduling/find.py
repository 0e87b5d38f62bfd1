"""`Appointment/$find` (Argonaut Scheduling style): proposed appointments for free Slots.

Inputs (query string or Parameters): `start`, `end` (default now and a week on),
`practitioner` (Practitioner/x: Schedules whose actor is it or one of its
PractitionerRoles), `location` (Location/x: the same through PractitionerRole.location),
`specialty`, `service-type` (tokens, comma = or), `visit-type` (`in-person` | `virtual`),
`duration` (minutes: consecutive free Slots of one Schedule are joined until it is
covered), `patient` (Patient/x, named in each proposal; a patient token's own by default),
`_count` (default and cap: `scheduling.find_max_results`).

The answer is a searchset Bundle of Appointments with status `proposed`, not stored, each
referencing its Slot(s) and the Schedule's actors: pass one to `$hold` or `$book`. Every
lookup is an indexed search through the repository (a few Schedule searches, then Slot
searches on schedule + status + start, sorted by start, a day of the window at a time:
`free_slots`); a proposal never names any patient but the one asked for, so a patient
sees free time, never another patient's booking.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.fhir.bundles import bundle
from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from fhirpm.repository.service import now_instant
from fhirpm.scheduling import lookup, model
from fhirpm.scheduling.params import Inputs

if TYPE_CHECKING:
    from fhirpm.config import SchedulingSettings
    from fhirpm.repository.service import Repository
    from fhirpm.storage.port import ResourceVersion

DEFINITION = "http://fhirpm.org/fhir/OperationDefinition/Appointment-find"
MAX_WINDOW = timedelta(days=366)


class Find:
    def __init__(self, settings: SchedulingSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.clock = clock

    async def operation(self, ix: Interactions, req: FhirRequest, type: str | None,
                        id: str | None) -> FhirResponse:
        inputs = Inputs(req)
        start = inputs.instant("start") or self.clock()
        end = inputs.instant("end") or start + timedelta(days=7)
        if end <= start:
            raise FhirError(Category.INVALID, "end must be after start", expression=("end",))
        if end - start > MAX_WINDOW:
            raise FhirError(Category.TOO_COSTLY, "$find searches at most a year at a time",
                            expression=("end",))
        limit = min(_count(req) or self.settings.find_max_results,
                    self.settings.find_max_results)
        duration = _minutes(inputs)
        patient = patient_of(req, inputs.text("patient"))
        schedules = await candidate_schedules(ix.repo, inputs)
        slots: list[ResourceVersion] = []
        if schedules is None or schedules:
            params = slot_params(inputs, None if schedules is None else sorted(schedules))
            want = limit if duration is None else min(limit * 4, 1000)
            whole = schedules is not None and await lookup.few(
                ix.repo, "Slot", [("schedule", ",".join(f"Schedule/{s}" for s in schedules))])
            slots = await free_slots(ix.repo, params, start, end, want, whole=whole)
        proposals = await propose(ix.repo, [jsonio.loads(s.body) for s in slots], duration,
                                  patient, limit, schedules or {})
        entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": p,
                    "search": {"mode": "match"}} for p in proposals]
        return FhirResponse(200, bundle("searchset", entries, total=len(entries),
                                        timestamp=now_instant()))

    def install(self, interactions: Interactions) -> None:
        register(interactions, OperationSpec(
            "find", DEFINITION, self.operation, type=True, types=("Appointment",),
            documentation="Proposed appointments for free Slots (start, end, practitioner, "
                          "location, specialty, service-type, visit-type, duration, "
                          "patient); nothing is stored"))


def _count(req: FhirRequest) -> int | None:
    raw = req.param("_count")
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise FhirError(Category.INVALID, "_count must be a positive integer",
                        expression=("_count",))
    return int(raw)


def _minutes(inputs: Inputs) -> int | None:
    raw = inputs.one("duration")
    if raw is None:
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or value > 24 * 60:
        raise FhirError(Category.INVALID, "duration must be minutes between 1 and 1440",
                        expression=("duration",))
    return value


def patient_of(req: FhirRequest, given: str | None) -> str | None:
    """The patient a request books for: a patient token's own, or `given` (Patient/x)."""
    own = getattr(req.principal, "patient", None)
    if given is not None and model.local_id(given, "Patient") is None:
        raise FhirError(Category.INVALID, f"patient must be a Patient reference, not "
                        f"{given!r}", expression=("patient",))
    if own:
        if given is not None and model.local_id(given, "Patient") != own:
            raise FhirError(Category.FORBIDDEN, "A patient token books only for its own "
                            "patient", expression=("patient",))
        return f"Patient/{own}"
    return f"Patient/{model.local_id(given, 'Patient')}" if given else None


async def candidate_schedules(repo: Repository, inputs: Inputs
                              ) -> dict[str, dict[str, Any]] | None:
    """The Schedules (by id) for `practitioner` and `location` (None: any Schedule)."""
    found: dict[str, dict[str, Any]] | None = None
    for name, type_, role_param in (("practitioner", "Practitioner", "practitioner"),
                                    ("location", "Location", "location")):
        refs = inputs.texts(name)
        if not refs:
            continue
        ids = {model.local_id(r, type_) or (r if "/" not in r else "") for r in refs}
        if "" in ids:
            raise FhirError(Category.INVALID, f"{name} must be {type_} references",
                            expression=(name,))
        targets = ",".join(f"{type_}/{i}" for i in sorted(ids))
        roles = await lookup.search(repo, "PractitionerRole", [(role_param, targets)],
                                    everything=True)
        actors = [targets] + ([",".join(f"PractitionerRole/{r.id}" for r in roles)]
                              if roles else [])
        schedules = await lookup.search(repo, "Schedule", [("actor", ",".join(actors))],
                                        everything=True)
        these = {s.id: jsonio.loads(s.body) for s in schedules}
        found = these if found is None else {k: v for k, v in found.items() if k in these}
    return found


async def free_slots(repo: Repository, params: list[tuple[str, str]], start: datetime,
                     end: datetime, want: int, *, whole: bool = False
                     ) -> list[ResourceVersion]:
    """The first `want` Slots matching `params` that start in [start, end), by start.

    The window is searched in pieces (`lookup.PIECE`), each one bounded range on the
    start index: the store's planner materialises that small driver and tests the rest
    per row, so a $find ("any doctor, this month") reads a day of index rows at a time
    until it has enough, never the whole horizon or a Schedule's whole history. `whole`:
    the Schedules' own Slots are few (a driver on their own): one search does."""
    found: list[ResourceVersion] = []
    while start < end and len(found) < want:
        piece_end = end if whole else min(start + lookup.PIECE, end)
        found += await lookup.search(repo, "Slot", params, count=want - len(found),
                                     extra=(lookup.starts_within(start, piece_end),))
        start = piece_end
    return found


def slot_params(inputs: Inputs, schedules: list[str] | None) -> list[tuple[str, str]]:
    params = [("status", "free"), ("_sort", "start")]
    if schedules is not None:
        params.append(("schedule", ",".join(f"Schedule/{s}" for s in schedules)))
    for name in ("service-type", "specialty"):
        values = inputs.texts(name)
        if values:
            params.append((name, ",".join(values)))
    visit = inputs.text("visit-type")
    if visit == "virtual":
        params.append(("service-type", f"{model.VISIT_TYPE}|virtual"))
    elif visit == "in-person":
        params.append(("service-type:not", f"{model.VISIT_TYPE}|virtual"))
    elif visit is not None:
        raise FhirError(Category.INVALID, "visit-type must be in-person or virtual",
                        expression=("visit-type",))
    return params


async def propose(repo: Repository, slots: list[dict[str, Any]], duration: int | None,
                  patient: str | None, limit: int,
                  known: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Proposed Appointments over `slots` (sorted by start), at most `limit`; `known`:
    Schedules already read."""
    runs = _runs(slots, duration)[:limit]
    owners = [_schedule_of(run[0]) for run in runs]
    wanted = sorted(set(owners) - {""} - set(known))
    schedules = dict(known)
    if wanted:  # one search for all of them, not a read each
        for version in await lookup.search(repo, "Schedule", [("_id", ",".join(wanted))],
                                           count=len(wanted)):
            schedules[version.id] = jsonio.loads(version.body)
    return [proposal(run, schedules.get(owner, {}), patient)
            for run, owner in zip(runs, owners, strict=True)]


def _schedule_of(slot: dict[str, Any]) -> str:
    return model.local_id((slot.get("schedule") or {}).get("reference"), "Schedule") or ""


def _runs(slots: list[dict[str, Any]], duration: int | None) -> list[list[dict[str, Any]]]:
    """One slot each, or consecutive slots of one Schedule covering `duration` minutes."""
    if duration is None:
        return [[s] for s in slots]
    need = timedelta(minutes=duration)
    by_schedule: dict[str, list[dict[str, Any]]] = {}
    for slot in slots:
        by_schedule.setdefault(slot["schedule"].get("reference", ""), []).append(slot)
    runs: list[list[dict[str, Any]]] = []
    for group in by_schedule.values():
        for i in range(len(group)):
            run = [group[i]]
            while _span(run) < need and i + len(run) < len(group) and \
                    group[i + len(run)]["start"] == run[-1]["end"]:
                run.append(group[i + len(run)])
            if _span(run) >= need:
                runs.append(run)
    return sorted(runs, key=lambda r: _at(r[0]["start"]))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _span(run: list[dict[str, Any]]) -> timedelta:
    return _at(run[-1]["end"]) - _at(run[0]["start"])


def proposal(run: list[dict[str, Any]], schedule: dict[str, Any],
             patient: str | None) -> dict[str, Any]:
    first = run[0]
    appointment: dict[str, Any] = {"resourceType": "Appointment", "status": "proposed"}
    for name in ("serviceCategory", "serviceType", "specialty", "appointmentType"):
        if first.get(name):
            appointment[name] = first[name]
    appointment["start"] = first["start"]
    appointment["end"] = run[-1]["end"]
    appointment["minutesDuration"] = int(_span(run).total_seconds() // 60)
    appointment["slot"] = [{"reference": f"Slot/{s['id']}"} for s in run]
    participants = [{"actor": {"reference": a["reference"]}, "required": "required",
                     "status": "needs-action"}
                    for a in schedule.get("actor") or () if a.get("reference")]
    if patient:
        participants.append({"actor": {"reference": patient}, "required": "required",
                             "status": "needs-action"})
    appointment["participant"] = participants or [{"type": [{"text": "unassigned"}],
                                                   "status": "needs-action"}]
    return appointment

