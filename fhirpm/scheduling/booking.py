"""Booking operations: `Appointment/$hold`, `Appointment/$book`, `Appointment/[id]/$cancel`,
`Appointment/[id]/$reschedule`, and the job that releases expired holds.

Every operation writes one Appointment through the repository, in one unit of work, with
the caller's access guard (`repository.access.GuardedUnit`): a patient token stores only
Appointments in its own compartment, staff (user/ or system/) any. The Slots follow by
the write rule (`booking_rule.SlotTaking`), which is what re-checks availability: a Slot
taken meanwhile answers 409 and nothing is stored; a multi-slot appointment takes all of
its Slots or none.

    $hold        input `appointment` (a proposal from $find, or a bare Appointment body),
                 `patient`: stores it `pending`, tagged as a hold, with the `hold-expires`
                 extension (now + `scheduling.hold_minutes`); the Slots go busy-tentative
    $book        input `appointment`: a held one (with its id) is booked in place; a
                 proposal is created booked. `overbook=true` (staff only) takes full Slots
                 and marks them overbooked
    $cancel      `reason` (text): status cancelled, its Slots freed
    $reschedule  `appointment` (a new proposal) or `slot` references: the same
                 Appointment moves, old Slots freed and new ones taken in one write

Answers: a `collection` Bundle holding the stored Appointment (201 when created).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.fhir.bundles import bundle
from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository import access
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from fhirpm.repository.reach import Policy
from fhirpm.repository.service import now_instant, version_headers
from fhirpm.scheduling import lookup, model
from fhirpm.scheduling.booking_rule import check_room, overbooking
from fhirpm.scheduling.find import patient_of
from fhirpm.scheduling.params import Inputs, instant_text

if TYPE_CHECKING:
    from fhirpm.config import SchedulingSettings
    from fhirpm.jobs import Jobs
    from fhirpm.repository.service import Repository, WriteResult
    from fhirpm.storage.port import UnitOfWork

log = logging.getLogger("fhirpm.scheduling")

BASE = "http://fhirpm.org/fhir/OperationDefinition/Appointment-"
JOB = "scheduling.release-holds"


def policy_of(ix: Interactions, req: FhirRequest) -> Policy | None:
    """The caller's policy (None: a trusted internal caller)."""
    if req.principal is None:
        return None
    return Policy(ix, access.authenticated(req.principal), req.base)


def guarded(unit: UnitOfWork, policy: Policy | None) -> UnitOfWork:
    return unit if policy is None else access.GuardedUnit(unit, policy)  # type: ignore[return-value]


def is_staff(policy: Policy | None) -> bool:
    return policy is None or policy.everything("Appointment", "u")


class Booking:
    def __init__(self, settings: SchedulingSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.clock = clock

    # -- $hold / $book -------------------------------------------------------------------

    async def hold(self, ix: Interactions, req: FhirRequest, type: str | None,
                   id: str | None) -> FhirResponse:
        inputs = Inputs(req)
        appointment = _proposal(ix, inputs)
        appointment.pop("id", None)
        appointment["status"] = "pending"
        _with_patient(appointment, patient_of(req, inputs.text("patient")), "tentative")
        meta = appointment.setdefault("meta", {})
        meta["tag"] = [*(t for t in meta.get("tag") or () if t.get("code") != "hold"),
                       model.HOLD_TAG]
        expires = self.clock() + timedelta(minutes=self.settings.hold_minutes)
        _set_extension(appointment, model.HOLD_EXPIRES,
                       {"valueInstant": instant_text(expires)})
        policy = policy_of(ix, req)
        async with ix.repo.unit(req.uow) as unit:
            await _times_from_slots(unit, appointment)
            result = await ix.repo.create("Appointment", appointment,
                                          uow=guarded(unit, policy))
        return _answer(req, result)

    async def book(self, ix: Interactions, req: FhirRequest, type: str | None,
                   id: str | None) -> FhirResponse:
        inputs = Inputs(req)
        given = _proposal(ix, inputs)
        policy = policy_of(ix, req)
        overbook = inputs.flag("overbook")
        if overbook and not is_staff(policy):
            raise FhirError(Category.FORBIDDEN, "Overbooking needs a staff token (user/ or "
                            "system/ scopes on Appointment)", expression=("overbook",))
        patient = patient_of(req, inputs.text("patient"))
        with overbooking() if overbook else contextlib.nullcontext():
            result = await self._book(ix, req, given, patient, policy)
        return _answer(req, result)

    async def _book(self, ix: Interactions, req: FhirRequest, given: dict[str, Any],
                    patient: str | None, policy: Policy | None) -> WriteResult:
        async with ix.repo.unit(req.uow) as unit:
            current = await unit.current("Appointment", given["id"]) if given.get("id") \
                else None
            if current is not None and not current.deleted:  # a hold (or booked already)
                await _visible(ix, policy, current)
                appointment = _booked(jsonio.loads(current.body))
                _with_patient(appointment, patient, "accepted")
                return await ix.repo.update("Appointment", current.id, appointment,
                                            uow=guarded(unit, policy))
            appointment = _booked({k: v for k, v in given.items() if k != "id"})
            _with_patient(appointment, patient, "accepted")
            await _times_from_slots(unit, appointment)
            return await ix.repo.create("Appointment", appointment, uow=guarded(unit, policy))

    # -- $cancel / $reschedule -----------------------------------------------------------

    async def cancel(self, ix: Interactions, req: FhirRequest, type: str | None,
                     id: str | None) -> FhirResponse:
        assert id is not None  # instance level only
        inputs = Inputs(req)
        reason = inputs.text("reason")
        policy = policy_of(ix, req)
        async with ix.repo.unit(req.uow) as unit:
            appointment = await _stored(ix, unit, policy, id)
            appointment["status"] = "cancelled"
            appointment["cancelationReason"] = {"coding": [{
                "system": model.CANCEL_REASONS,
                "code": "patient" if getattr(req.principal, "patient", None) else "practice"}]}
            if reason:
                appointment["cancelationReason"]["text"] = reason
            result = await ix.repo.update("Appointment", id, appointment,
                                          uow=guarded(unit, policy))
        return _answer(req, result)

    async def reschedule(self, ix: Interactions, req: FhirRequest, type: str | None,
                         id: str | None) -> FhirResponse:
        assert id is not None  # instance level only
        inputs = Inputs(req)
        slots = inputs.texts("slot")
        if not slots:
            target = _proposal(ix, inputs)
            slots = [s.get("reference", "") for s in target.get("slot") or ()]
        if not slots or any(model.local_id(s, "Slot") is None for s in slots):
            raise FhirError(Category.INVALID, "$reschedule needs the new slot references "
                            "(slot, or an appointment proposal)", expression=("slot",))
        policy = policy_of(ix, req)
        async with ix.repo.unit(req.uow) as unit:
            appointment = await _stored(ix, unit, policy, id)
            if not model.occupies(appointment):
                raise FhirError(Category.BUSINESS_RULE, f"Appointment/{id} is "
                                f"{appointment.get('status')}; only a standing appointment "
                                "can be rescheduled")
            appointment["slot"] = [{"reference": f"Slot/{model.local_id(s, 'Slot')}"}
                                   for s in slots]
            await _times_from_slots(unit, appointment)
            result = await ix.repo.update("Appointment", id, appointment,
                                          uow=guarded(unit, policy))
        return _answer(req, result)

    # -- expiry ------------------------------------------------------------------------

    async def release_job(self, repo: Repository) -> None:
        released = await release_expired(repo, self.clock())
        if released:
            log.info("expired holds released", extra={"job": JOB, "released": released})

    def install(self, interactions: Interactions, jobs: Jobs) -> None:
        specs = [
            ("hold", self.hold, False, "Hold the Slots of a proposed appointment for a "
             "while (status pending, hold-expires extension)"),
            ("book", self.book, False, "Book a held or proposed appointment for a patient"),
            ("cancel", self.cancel, True, "Cancel an appointment, freeing its Slots"),
            ("reschedule", self.reschedule, True, "Move an appointment to other Slots"),
        ]
        for name, handler, instance, doc in specs:
            register(interactions, OperationSpec(
                name, BASE + name, handler, type=not instance, instance=instance,
                types=("Appointment",), affects_state=True, documentation=doc))
        repo = interactions.repo
        jobs.every(JOB, self.settings.release_holds_seconds, lambda: self.release_job(repo))


async def release_expired(repo: Repository, now: datetime) -> int:
    """Cancel every hold whose `hold-expires` is at or before `now` (its Slots are freed by
    the write rule); a hold booked meanwhile is left alone. Returns how many."""
    held = await lookup.search(repo, "Appointment", [
        ("_tag", f"{model.HOLD_TAG['system']}|{model.HOLD_TAG['code']}"),
        ("status", "pending")], everything=True)
    released = 0
    for version in held:
        if not model.hold_expired(jsonio.loads(version.body), now):
            continue
        try:
            async with repo.unit(None) as unit:
                current = await unit.current("Appointment", version.id)
                if current is None or current.version != version.version:
                    continue  # booked or changed since the search
                await repo.replace(unit, current, model.released_hold(
                    jsonio.loads(current.body)), "PUT")
                released += 1
        except FhirError as err:  # a booking won the race: it is no longer ours to end
            log.info("hold Appointment/%s not released: %s", version.id, err.diagnostics)
    return released


# -- helpers ----------------------------------------------------------------------------


def _proposal(ix: Interactions, inputs: Inputs) -> dict[str, Any]:
    """The `appointment` input: a structurally valid Appointment naming its Slots."""
    found = inputs.one("appointment")
    if not isinstance(found, dict) or found.get("resourceType") != "Appointment":
        raise FhirError(Category.REQUIRED, "Give the appointment to book: an Appointment "
                        "(from $find) as the body or as the `appointment` parameter",
                        expression=("appointment",))
    errors = [i for i in ix.repo.validator.validate(found, jsonio.dumps(found))
              if i.severity in ("error", "fatal")]
    if errors:
        raise FhirError(Category.INVALID, f"appointment: {errors[0].diagnostics}",
                        issues=errors)
    if not model.slot_ids(found) and not found.get("id"):
        raise FhirError(Category.BUSINESS_RULE, "The appointment names no Slot: $find "
                        "proposes appointments with their slots",
                        expression=("Appointment.slot",))
    return copy.deepcopy(found)


def _booked(appointment: dict[str, Any]) -> dict[str, Any]:
    """`appointment` booked: status booked, hold marks gone."""
    appointment["status"] = "booked"
    appointment["extension"] = [e for e in appointment.get("extension") or ()
                                if e.get("url") != model.HOLD_EXPIRES]
    if not appointment["extension"]:
        del appointment["extension"]
    meta = appointment.get("meta")
    if meta is not None:
        meta["tag"] = [t for t in meta.get("tag") or ()
                       if not (t.get("system") == model.HOLD_TAG["system"]
                               and t.get("code") == model.HOLD_TAG["code"])]
        if not meta["tag"]:
            del meta["tag"]
    appointment.pop("cancelationReason", None)
    return appointment


def _with_patient(appointment: dict[str, Any], patient: str | None, status: str) -> None:
    """Name `patient` among the participants (its status set); one must be there."""
    participants = appointment.setdefault("participant", [])
    mine = [p for p in participants
            if model.local_id((p.get("actor") or {}).get("reference"), "Patient")]
    if patient is not None:
        wanted = model.local_id(patient, "Patient")
        same = [p for p in mine
                if model.local_id(p["actor"]["reference"], "Patient") == wanted]
        others = [p["actor"]["reference"] for p in mine if p not in same]
        if others:
            raise FhirError(Category.FORBIDDEN, f"The appointment names {others[0]}; it can "
                            f"only be booked for {patient}", expression=("patient",))
        if not same:
            same = [{"actor": {"reference": patient}, "required": "required"}]
            participants.append(same[0])
        mine = same
    if not mine:
        raise FhirError(Category.REQUIRED, "Name the patient: a `patient` parameter or a "
                        "Patient participant", expression=("patient",))
    for p in mine:
        p["status"] = status
    for p in participants:  # the practice's side accepts what its own schedule offers
        if p not in mine and p.get("status") == "needs-action":
            p["status"] = "accepted"


async def _times_from_slots(unit: UnitOfWork, appointment: dict[str, Any]) -> None:
    """start/end from the Slots (the client cannot claim another time than they hold).
    A full Slot answers 409 here already, before anything is written (the write rule
    checks again: this only saves a doomed request its writes)."""
    starts, ends = [], []
    for slot_id in model.slot_ids(appointment):
        found = await unit.current("Slot", slot_id)
        if found is None or found.deleted:
            raise FhirError(Category.BUSINESS_RULE, f"Slot/{slot_id} does not exist",
                            expression=("Appointment.slot",))
        slot = jsonio.loads(found.body)
        occupants = model.occupants(slot)
        if appointment.get("id") not in occupants and not any(occupants.values()):
            check_room(slot, slot_id, occupants)  # with holds, the rule decides (expiry)
        starts.append(slot["start"])
        ends.append(slot["end"])
    if starts:
        first = min(starts, key=_at)
        last = max(ends, key=_at)
        appointment["start"], appointment["end"] = first, last
        appointment["minutesDuration"] = int((_at(last) - _at(first)).total_seconds() // 60)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _set_extension(resource: dict[str, Any], url: str, value: dict[str, Any]) -> None:
    kept = [e for e in resource.get("extension") or () if e.get("url") != url]
    resource["extension"] = [*kept, {"url": url, **value}]


async def _visible(ix: Interactions, policy: Policy | None, current: Any) -> None:
    """A stored Appointment outside the caller's reach answers 404, like a missing one."""
    if policy is None:
        return
    clause = policy.reach("Appointment", "r")
    if not await access.visible(ix, policy, clause, current):
        raise access.unknown("Appointment", current.id)


async def _stored(ix: Interactions, unit: UnitOfWork, policy: Policy | None,
                  id: str) -> dict[str, Any]:
    current = await unit.current("Appointment", id)
    if current is None:
        raise FhirError(Category.NOT_FOUND, f"Appointment/{id} is not known")
    if current.deleted:
        await _visible(ix, policy, await ix.repo.store.read("Appointment", id))
        raise FhirError(Category.DELETED, f"Appointment/{id} was deleted")
    await _visible(ix, policy, current)
    return jsonio.loads(current.body)


def _answer(req: FhirRequest, result: WriteResult) -> FhirResponse:
    v = result.version
    headers = version_headers(v)
    headers["Location"] = f"{req.base}/{v.type}/{v.id}/_history/{v.version}"
    entry = {"fullUrl": f"{req.base}/{v.type}/{v.id}", "resource": jsonio.raw(v.body)}
    return FhirResponse(201 if result.created else 200,
                        bundle("collection", [entry], timestamp=now_instant()), headers, v)


# -- access: what each operation needs (repository.access.OPERATIONS) --------------------


async def _may_find(ix: Interactions, policy: Policy, spec: Any, type: str | None,
                    id: str | None) -> None:
    policy.reach("Slot", "s")  # free time is as public as the caller's Slot access


async def _may_book(ix: Interactions, policy: Policy, spec: Any, type: str | None,
                    id: str | None) -> None:
    if not (policy.may("Appointment", "c") or policy.may("Appointment", "u")):
        raise policy.refusal("Appointment", "c")


async def _may_change(ix: Interactions, policy: Policy, spec: Any, type: str | None,
                      id: str | None) -> None:
    policy.reach("Appointment", "u")  # 403 without it; reach is checked on the write


def install_access() -> None:
    access.OPERATIONS.update({"find": _may_find, "hold": _may_book, "book": _may_book,
                              "cancel": _may_change, "reschedule": _may_change})
