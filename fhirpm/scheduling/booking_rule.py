"""No double booking: the write rules that keep Appointments and their Slots consistent.

`SlotTaking` runs on every Appointment write (Repository.add_rule), inside the writer's
unit of work, whatever the path: REST create/update/patch/delete, batch and transaction
entries, $hold/$book, HL7 v2 inbound. An Appointment in an occupying status
(`model.OCCUPYING`) takes each Slot it references; one that stops occupying (cancelled,
deleted, a slot removed from its list) frees them. A Slot records who occupies it
(`model.BOOKED_BY` / `model.HELD_BY`) and is written with `repo.replace`, a compare-and-swap
on its version, so two writers racing for one Slot cannot both win: the loser sees the
Slot full (409) or loses the swap (409), and its whole unit, Appointment included, is
rolled back. A Slot takes up to its capacity (`model.CAPACITY`, default 1); beyond that
only inside `overbooking()` (staff, checked by the caller), which sets `Slot.overbooked`.

`SlotGuard` runs on Slot writes from anyone else: occupancy is the server's record, so a
client may not edit it, nor delete, free or move (time, schedule) a Slot that
Appointments occupy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.repository.access import GuardedUnit
from fhirpm.scheduling import model

if TYPE_CHECKING:
    from fhirpm.repository.service import Change, Repository
    from fhirpm.storage.port import ResourceVersion, UnitOfWork

_overbook: ContextVar[bool] = ContextVar("fhirpm_scheduling_overbook", default=False)
_managing: ContextVar[bool] = ContextVar("fhirpm_scheduling_managing", default=False)

BUSY = frozenset({"busy", "busy-tentative"})


@contextmanager
def overbooking() -> Iterator[None]:
    """Writes inside may take a full Slot (the caller has checked for a staff scope)."""
    token = _overbook.set(True)
    try:
        yield
    finally:
        _overbook.reset(token)


@contextmanager
def _managing_slots() -> Iterator[None]:
    token = _managing.set(True)
    try:
        yield
    finally:
        _managing.reset(token)


def trusted(unit: UnitOfWork) -> UnitOfWork:
    """The unit beneath a caller's access guard: the Slot a booking takes is the server's
    consequence of an Appointment the caller was allowed to write (a patient books without
    any right to edit Slots)."""
    return unit._unit if isinstance(unit, GuardedUnit) else unit


class SlotTaking:
    """Appointment write rule: take the Slots of an occupying Appointment, free the rest.

    A full Slot whose holds have expired is not full: those holds are released (cancelled,
    `hold-expired`) in the same unit before it is taken, so a booking never waits for the
    release job."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock

    async def apply(self, repo: Repository, unit: UnitOfWork, change: Change) -> None:
        before, after = change.before, change.after
        old = set(model.slot_ids(before)) if model.occupies(before) else set()
        new = set(model.slot_ids(after)) if model.occupies(after) else set()
        if not old and not new:
            return
        held = model.is_hold(after)
        raw = trusted(unit)
        for slot_id in sorted(old | new):  # one order for every writer
            if slot_id in new:
                await _take(repo, raw, slot_id, change.id, held, self.clock)
            else:
                await _free(repo, raw, slot_id, change.id)


async def _current_slot(unit: UnitOfWork, slot_id: str) -> ResourceVersion:
    current = await unit.current("Slot", slot_id)
    if current is None or current.deleted:
        raise FhirError(Category.BUSINESS_RULE, f"Slot/{slot_id} does not exist, so it "
                        "cannot be booked", expression=("Appointment.slot",))
    return current


async def _take(repo: Repository, unit: UnitOfWork, slot_id: str, appointment: str,
                held: bool, clock: Callable[[], datetime]) -> None:
    current = await _current_slot(unit, slot_id)
    slot = jsonio.loads(current.body)
    occupants = model.occupants(slot)
    if occupants.get(appointment) is held:
        return  # already taken, in the same way
    if appointment not in occupants and len(occupants) >= model.capacity(slot) and \
            await _release_expired(repo, unit, occupants, clock()):
        current = await _current_slot(unit, slot_id)  # the released holds freed it
        slot = jsonio.loads(current.body)
        occupants = model.occupants(slot)
    if appointment not in occupants:
        check_room(slot, slot_id, occupants)
    occupants[appointment] = held
    await _store(repo, unit, current, slot, occupants)


async def _release_expired(repo: Repository, unit: UnitOfWork, occupants: dict[str, bool],
                           now: datetime) -> bool:
    """Cancel the expired holds among `occupants` (their own rule run frees their Slots);
    whether any was."""
    released = False
    for id_, held in sorted(occupants.items()):
        if not held:
            continue
        current = await unit.current("Appointment", id_)
        if current is None or current.deleted:
            continue
        appointment = jsonio.loads(current.body)
        if model.hold_expired(appointment, now):
            await repo.replace(unit, current, model.released_hold(appointment), "PUT")
            released = True
    return released


def check_room(slot: dict[str, Any], slot_id: str, occupants: dict[str, bool]) -> None:
    """409 unless the Slot can take one more Appointment (or we are overbooking)."""
    status = slot.get("status")
    if status == "busy-unavailable":
        raise FhirError(Category.CONFLICT, f"Slot/{slot_id} is not available for booking",
                        expression=("Appointment.slot",))
    room = model.capacity(slot) - len(occupants)
    if status in BUSY and not occupants:
        room = 0  # marked busy by someone else (an import, a person): full
    if room <= 0 and not _overbook.get():
        raise FhirError(Category.CONFLICT, f"Slot/{slot_id} is already booked "
                        f"(capacity {model.capacity(slot)}); choose another time",
                        expression=("Appointment.slot",))


async def _free(repo: Repository, unit: UnitOfWork, slot_id: str, appointment: str) -> None:
    current = await unit.current("Slot", slot_id)
    if current is None or current.deleted:
        return  # nothing left to free
    slot = jsonio.loads(current.body)
    occupants = model.occupants(slot)
    if appointment not in occupants:
        return
    del occupants[appointment]
    await _store(repo, unit, current, slot, occupants)


async def _store(repo: Repository, unit: UnitOfWork, current: ResourceVersion,
                 slot: dict[str, Any], occupants: dict[str, bool]) -> None:
    with _managing_slots():
        await repo.replace(unit, current, with_occupants(slot, occupants), "PUT")


def with_occupants(slot: dict[str, Any], occupants: dict[str, bool]) -> dict[str, Any]:
    """`slot` recording `occupants`, its status and `overbooked` derived from them."""
    out = {k: v for k, v in slot.items() if k not in ("meta", "overbooked")}
    kept = [e for e in slot.get("extension") or ()
            if e.get("url") not in (model.BOOKED_BY, model.HELD_BY)]
    for id_, held in sorted(occupants.items()):
        kept.append({"url": model.HELD_BY if held else model.BOOKED_BY,
                     "valueReference": {"reference": f"Appointment/{id_}"}})
    if kept:
        out["extension"] = kept
    else:
        out.pop("extension", None)
    cap = model.capacity(slot)
    if len(occupants) >= cap:
        out["status"] = "busy-tentative" if any(occupants.values()) else "busy"
    elif slot.get("status") in BUSY:
        out["status"] = "free"
    if len(occupants) > cap:
        out["overbooked"] = True
    return out


class SlotGuard:
    """Slot write rule: only the booking rule changes who occupies a Slot."""

    async def apply(self, repo: Repository, unit: UnitOfWork, change: Change) -> None:
        if _managing.get():
            return
        before = model.occupants(change.before) if change.before is not None else {}
        if change.after is None:
            if before:
                names = ", ".join(f"Appointment/{a}" for a in sorted(before))
                raise FhirError(Category.CONFLICT, f"Slot/{change.id} is occupied by "
                                f"{names}; cancel or move those appointments first")
            return
        if model.occupants(change.after) != before:
            raise _managed(change.id)
        if before and any(change.after.get(k) != change.before.get(k)
                          for k in ("start", "end", "schedule")):
            raise FhirError(Category.CONFLICT, f"Slot/{change.id} is booked; move its "
                            "appointments ($reschedule) before changing its time or "
                            "schedule", expression=("Slot.start",))
        if before and len(before) >= model.capacity(change.after) and \
                change.after.get("status") == "free":
            raise FhirError(Category.CONFLICT, f"Slot/{change.id} is full; it cannot be "
                            "marked free while its appointments stand",
                            expression=("Slot.status",))


def _managed(slot_id: str) -> FhirError:
    return FhirError(Category.CONFLICT, f"Slot/{slot_id}: the slot-booked-by and "
                     "slot-held-by extensions are kept by the server from the Appointments "
                     "that take the slot; book or cancel an Appointment instead",
                     expression=("Slot.extension",))


def install(repo: Repository) -> None:
    repo.add_rule("Appointment", SlotTaking())
    repo.add_rule("Slot", SlotGuard())
