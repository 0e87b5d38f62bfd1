"""The scheduling vocabulary every scheduling module shares: which Appointment statuses
occupy their Slots, how an Appointment names its Slots, and the extensions fhirpm uses
where FHIR R4 has no element (each one is documented in docs/scheduling.md).

Pure functions over resource dicts: no repository, no I/O, so the visit, publishing and
booking modules (and HL7 v2 mappings) can all import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

SD = "http://fhirpm.org/fhir/StructureDefinition/"
CS = "http://fhirpm.org/fhir/CodeSystem/"

# -- Slot ---------------------------------------------------------------------------------

# SMART Scheduling Links' optional capacity extension (valueInteger); absent means 1.
CAPACITY = "http://fhir-registry.smarthealthit.org/StructureDefinition/slot-capacity"
# One per Appointment occupying the Slot (valueReference): booked / held (busy-tentative).
BOOKED_BY = SD + "slot-booked-by"
HELD_BY = SD + "slot-held-by"
# The identifier system of generated slots: value "Schedule/<id>|<start>" (UTC instants).
GENERATED = "http://fhirpm.org/fhir/slot-key"

# -- Appointment --------------------------------------------------------------------------

# A hold ($hold): the Appointment is `pending`, tagged HOLD_TAG, expiring at HOLD_EXPIRES.
HOLD_EXPIRES = SD + "hold-expires"  # valueInstant
HOLD_TAG = {"system": CS + "scheduling", "code": "hold", "display": "Held by $hold"}
CANCEL_REASONS = CS + "cancel-reason"  # codes: hold-expired, patient, practice, rescheduled

# Visit type, as a Schedule/Slot/Appointment.serviceType coding (absent means in-person).
VISIT_TYPE = CS + "visit-type"
VIRTUAL = {"system": VISIT_TYPE, "code": "virtual", "display": "Virtual visit"}
IN_PERSON = {"system": VISIT_TYPE, "code": "in-person", "display": "In-person visit"}

# -- availability templates -----------------------------------------------------------------

# IANA time zone (valueCode) on a Location or Schedule: the core "timezone" extension.
TIMEZONE = "http://hl7.org/fhir/StructureDefinition/timezone"
# Slot length of a Schedule (valueDuration, unit min/h).
SLOT_LENGTH = SD + "slot-length"
# Extra one-off availability of a PractitionerRole/HealthcareService/Schedule (valuePeriod).
AVAILABLE_EXTRA = SD + "available-extra"
# Practice-wide closures on a Location or Schedule (valuePeriod), like notAvailable.
CLOSED = SD + "not-available"

# Statuses in which an Appointment takes its Slots (R4 Appointment.status).
OCCUPYING = frozenset({"pending", "booked", "arrived", "checked-in", "fulfilled"})
# ... and in which it does not (it frees them when it moves here).
NOT_OCCUPYING = frozenset({"proposed", "cancelled", "noshow", "entered-in-error", "waitlist"})


def occupies(appointment: dict[str, Any] | None) -> bool:
    """Whether this Appointment (None: deleted) holds its Slots."""
    return appointment is not None and appointment.get("status") in OCCUPYING


def slot_ids(appointment: dict[str, Any] | None) -> list[str]:
    """The local Slot ids an Appointment references, in order, without repeats."""
    if appointment is None:
        return []
    found: list[str] = []
    for ref in appointment.get("slot") or ():
        id_ = local_id(ref.get("reference") if isinstance(ref, dict) else None, "Slot")
        if id_ and id_ not in found:
            found.append(id_)
    return found


def local_id(reference: Any, type: str) -> str | None:
    """`Slot/1` or `http://base/fhir/Slot/1` -> "1" (history versions dropped); else None."""
    if not isinstance(reference, str):
        return None
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == type and parts[-1]:
        return parts[-1]
    return None


def is_hold(appointment: dict[str, Any] | None) -> bool:
    """A `$hold` not yet booked: pending with the hold tag."""
    if appointment is None or appointment.get("status") != "pending":
        return False
    return any(t.get("system") == HOLD_TAG["system"] and t.get("code") == HOLD_TAG["code"]
               for t in (appointment.get("meta") or {}).get("tag") or ())


def hold_expired(appointment: dict[str, Any], now: datetime) -> bool:
    """A hold whose `hold-expires` is at or before `now` (aware datetime)."""
    found = extension(appointment, HOLD_EXPIRES)
    text = (found or {}).get("valueInstant")
    if not is_hold(appointment) or not isinstance(text, str):
        return False
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) <= now
    except ValueError:
        return False


def released_hold(appointment: dict[str, Any]) -> dict[str, Any]:
    """The hold `appointment` cancelled because it expired (its Slots then go free)."""
    return {**appointment, "status": "cancelled", "cancelationReason": {
        "coding": [{"system": CANCEL_REASONS, "code": "hold-expired"}],
        "text": "The hold expired before the appointment was booked"}}


def extension(resource: dict[str, Any], url: str) -> dict[str, Any] | None:
    """The first extension of `url` on `resource`, or None."""
    return next((e for e in resource.get("extension") or () if e.get("url") == url), None)


def extensions(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension") or () if e.get("url") == url]


def capacity(slot: dict[str, Any]) -> int:
    """How many Appointments the Slot takes (the SMART capacity extension; default 1)."""
    found = extension(slot, CAPACITY)
    value = found.get("valueInteger") if found else None
    return value if isinstance(value, int) and value >= 1 else 1


def occupants(slot: dict[str, Any]) -> dict[str, bool]:
    """Appointment id -> held (True) or booked (False), as the Slot records them."""
    out: dict[str, bool] = {}
    for url, held in ((BOOKED_BY, False), (HELD_BY, True)):
        for ext in extensions(slot, url):
            id_ = local_id((ext.get("valueReference") or {}).get("reference"), "Appointment")
            if id_:
                out[id_] = held
    return out


def has_coding(concepts: Iterable[dict[str, Any]] | None, coding: dict[str, str]) -> bool:
    """Whether some CodeableConcept carries `coding` (system and code)."""
    return any(c.get("system") == coding["system"] and c.get("code") == coding["code"]
               for concept in concepts or () for c in concept.get("coding") or ())


def is_virtual(resource: dict[str, Any]) -> bool:
    """A virtual visit: a serviceType coding VIRTUAL (Schedule, Slot or Appointment)."""
    return has_coding(resource.get("serviceType"), VIRTUAL)
