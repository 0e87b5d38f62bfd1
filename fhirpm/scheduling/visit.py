"""The visit: an Appointment's check-in, check-out, no-show and cancellation drive its
Encounter, and a finished Encounter is the charge-capture event billing follows.

`VisitRule` is a write rule on Appointment (Repository.add_rule), so it runs on every write
path (REST PUT/PATCH, transaction bundles, operations, HL7 v2) inside the writer's unit of
work: the Appointment and its Encounter commit together or not at all. It acts only when
the Appointment's status changes (R4 Appointment.status -> Encounter.status):

    arrived           -> arrived      (created if absent: period.start, subject, participants)
    checked-in        -> in-progress  (pre-visit admin work done; created if absent)
    fulfilled         -> finished     (period.end: check-out; created if absent)
    cancelled, noshow -> cancelled    (only an Encounter that exists and is not finished)
    entered-in-error  -> entered-in-error
    back to booked/pending/proposed/waitlist -> planned (an undone check-in)

The Encounter id is derived from the Appointment id (`encounter_id`) and carries the
identifier `ENCOUNTER_OF|<appointment id>`, so repeats and retries update one Encounter.
Its statusHistory lists every status with its period, the current one open. Writes go
through the writer's unit as given: a token that may not write Encounters cannot check a
patient in (staff need e.g. `user/Encounter.cru` besides Appointment).

Cancellation reasons: Appointment.cancelationReason is optional by default (R4, HL7 v2
S15 and patient apps often send none); with FHIRPM_SCHEDULING__REQUIRE_CANCEL_REASON=true
a move to `cancelled` without one is refused (422) on every path.

Charge capture: every version of an Encounter whose status is `finished` is on the
store's change log; `charge_capture_events` turns a ChangeFeed batch into
`ChargeCapture` events keyed so that re-deliveries and later edits of the same visit
collapse (`key`), and `follow_charge_capture` subscribes a billing handler with its own
durable cursor (at least once, in commit order). See docs/scheduling.md, "The visit".
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.scheduling import model

if TYPE_CHECKING:
    from fhirpm.changes import ChangeFeed
    from fhirpm.config import SchedulingSettings
    from fhirpm.repository.service import Change, Repository
    from fhirpm.storage.port import ResourceVersion, UnitOfWork

ENCOUNTER_OF = "http://fhirpm.org/fhir/encounter-of-appointment"  # identifier system
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, ENCOUNTER_OF)
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
AMBULATORY = {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"}
VIRTUAL = {"system": ACT_CODE, "code": "VR", "display": "virtual"}

# Appointment status -> the Encounter status it leads to.
TARGET = {
    "arrived": "arrived", "checked-in": "in-progress", "fulfilled": "finished",
    "cancelled": "cancelled", "noshow": "cancelled", "entered-in-error": "entered-in-error",
    "booked": "planned", "pending": "planned", "proposed": "planned", "waitlist": "planned",
}
CREATES = frozenset({"arrived", "in-progress", "finished"})  # statuses that start a visit
_INDIVIDUALS = ("Practitioner", "PractitionerRole", "RelatedPerson")


def encounter_id(appointment_id: str) -> str:
    """The Encounter id of an Appointment's visit: the same for every write and server."""
    return str(uuid.uuid5(_ID_NAMESPACE, appointment_id))


class VisitRule:
    """Write rule on Appointment (module doc)."""

    def __init__(self, *, require_cancel_reason: bool = False) -> None:
        self.require_cancel_reason = require_cancel_reason

    async def apply(self, repo: Repository, unit: UnitOfWork, change: Change) -> None:
        after = change.after
        if after is None:
            return  # a deleted Appointment leaves its Encounter as it was
        status = after.get("status")
        if change.before is not None and change.before.get("status") == status:
            return  # not a transition (a reschedule, a note, the join link being added)
        if status == "cancelled":
            self._check_reason(after)
        target = TARGET.get(status or "")
        if target is None:
            return
        await _move_encounter(repo, unit, change.id, after, target)

    def _check_reason(self, appointment: dict[str, Any]) -> None:
        if self.require_cancel_reason and not appointment.get("cancelationReason"):
            raise FhirError(Category.BUSINESS_RULE, "This server requires a reason to cancel "
                            "an appointment (Appointment.cancelationReason)",
                            expression=("Appointment.cancelationReason",))


async def _move_encounter(repo: Repository, unit: UnitOfWork, appointment_id: str,
                          appointment: dict[str, Any], target: str) -> None:
    eid = encounter_id(appointment_id)
    current = await unit.current("Encounter", eid)
    at = appointment["meta"]["lastUpdated"]
    if current is None or current.deleted:
        if target not in CREATES or _patient(appointment) is None:
            return  # nothing happened yet (or no patient to see): no visit to record
        encounter = new_encounter(eid, appointment_id, appointment, at)
        if current is None:
            await repo.create("Encounter", moved(encounter, target, at), uow=unit, id=eid)
        else:
            await repo.update("Encounter", eid, moved(encounter, target, at), uow=unit)
        return
    encounter = jsonio.loads(current.body)
    status = encounter.get("status")
    if status == target or (status == "finished" and target in ("cancelled", "planned")):
        return  # already there; a finished visit is not undone by cancelling its booking
    await repo.replace(unit, current, moved(encounter, target, at), "PUT")


def new_encounter(eid: str, appointment_id: str, appointment: dict[str, Any],
                  at: str) -> dict[str, Any]:
    """The Encounter of an Appointment's visit, before its first status."""
    encounter: dict[str, Any] = {
        "resourceType": "Encounter", "id": eid,
        "identifier": [{"system": ENCOUNTER_OF, "value": appointment_id}],
        "status": "planned",
        "class": VIRTUAL if model.is_virtual(appointment) else AMBULATORY,
    }
    if appointment.get("appointmentType"):
        encounter["type"] = [appointment["appointmentType"]]
    if appointment.get("serviceType"):
        encounter["serviceType"] = appointment["serviceType"][0]
    encounter["subject"] = _patient(appointment)
    people = [_participant(p) for p in _actors(appointment, _INDIVIDUALS)]
    if people:
        encounter["participant"] = people
    encounter["appointment"] = [{"reference": f"Appointment/{appointment_id}"}]
    encounter["period"] = {"start": at}
    for name in ("reasonCode", "reasonReference", "basedOn"):
        if appointment.get(name):
            encounter[name] = appointment[name]
    places = [{"location": p["actor"]} for p in _actors(appointment, ("Location",))]
    if places:
        encounter["location"] = places
    return encounter


def moved(encounter: dict[str, Any], target: str, at: str) -> dict[str, Any]:
    """`encounter` in status `target` from `at`: statusHistory and period kept in step."""
    history = [dict(h) for h in encounter.get("statusHistory") or ()]
    if history and "end" not in history[-1].get("period", {}):
        history[-1]["period"] = {**history[-1]["period"], "end": at}
    history.append({"status": target, "period": {"start": at}})
    period = dict(encounter.get("period") or {"start": at})
    if target == "finished":
        period["end"] = at
    else:
        period.pop("end", None)  # reopened: the visit goes on
    return {**encounter, "status": target, "statusHistory": history, "period": period}


def _actors(appointment: dict[str, Any], types: tuple[str, ...]) -> list[dict[str, Any]]:
    found = []
    for p in appointment.get("participant") or ():
        ref = (p.get("actor") or {}).get("reference")
        if isinstance(ref, str) and any(model.local_id(ref, t) for t in types):
            found.append(p)
    return found


def _patient(appointment: dict[str, Any]) -> dict[str, Any] | None:
    patients = _actors(appointment, ("Patient",))
    return patients[0]["actor"] if patients else None


def _participant(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"individual": p["actor"]}
    if p.get("type"):
        out["type"] = p["type"]
    if p.get("period"):
        out["period"] = p["period"]
    return out


# -- charge capture --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargeCapture:
    """A visit ready to bill: one finished Encounter (module doc, docs/scheduling.md).

    `key` names the check-out (`Encounter/<id>|<period.end>`): a re-delivered batch or a
    later edit of the finished Encounter gives the same key, a reopened and again finished
    visit a new one. Billing keys what it creates by it (e.g. ChargeItem.identifier)."""

    key: str
    encounter: dict[str, Any]  # the finished Encounter as stored
    version: int
    seq: int  # its position in the change log
    patient: str | None  # "Patient/<id>"
    appointment: str | None  # "Appointment/<id>" when the visit was booked
    end: str | None  # period.end: when the patient was checked out


def charge_capture_events(versions: Sequence[ResourceVersion]) -> list[ChargeCapture]:
    """The finished-Encounter versions in a change-log batch, as ChargeCapture events."""
    events = []
    for v in versions:
        if v.type != "Encounter" or v.deleted or b'"finished"' not in v.body:
            continue  # the byte test skips most versions without parsing them
        encounter = jsonio.loads(v.body)
        if encounter.get("status") != "finished":
            continue
        end = (encounter.get("period") or {}).get("end")
        appointments = encounter.get("appointment") or [{}]
        events.append(ChargeCapture(
            key=f"Encounter/{v.id}|{end or ''}", encounter=encounter, version=v.version,
            seq=v.seq, patient=(encounter.get("subject") or {}).get("reference"),
            appointment=appointments[0].get("reference"), end=end))
    return events


ChargeHandler = Callable[[list[ChargeCapture]], Awaitable[None]]


def follow_charge_capture(feed: ChangeFeed, name: str, handler: ChargeHandler) -> None:
    """Subscribe `handler` to charge-capture events under consumer `name` (its own durable
    cursor): called with the events of each change-log batch that has any, at least once;
    it should be idempotent by `ChargeCapture.key`. A raise retries the same batch."""
    feed.subscribe(name, charge_capture_handler(handler))


def charge_capture_handler(handler: ChargeHandler) -> Callable[
        [Sequence[ResourceVersion]], Awaitable[None]]:
    """A ChangeFeed handler passing each batch's charge-capture events to `handler`
    (for `ChangeFeed.follow`/`catch_up`, e.g. a one-shot billing backfill)."""

    async def on_batch(batch: Sequence[ResourceVersion]) -> None:
        events = charge_capture_events(batch)
        if events:
            await handler(events)

    return on_batch


def install(repo: Repository, settings: SchedulingSettings) -> None:
    repo.add_rule("Appointment", VisitRule(require_cancel_reason=settings.require_cancel_reason))
