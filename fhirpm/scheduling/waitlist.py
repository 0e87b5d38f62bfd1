"""The waitlist: patients waiting for an earlier or any opening, and who fits a freed Slot.

A waitlist entry is an R4 Appointment with `status = waitlist`: its participants name the
patient and, optionally, the practitioner or location wanted; `serviceType` the service
(and visit type); `requestedPeriod` the times the patient can come (absent: any time);
`created` when they joined the list. Such an Appointment takes no Slot (model.OCCUPYING),
and is an ordinary searchable resource:

    GET [base]/Appointment?status=waitlist&service-type=...&practitioner=...

When a Slot is freed (a cancellation, a no-show released by the booking rule; every such
write is on the change log), staff ask who fits it:

    GET [base]/Slot/[id]/$waitlist

answers a searchset of the waitlisted Appointments this Slot can serve, first come first
served (`created`, then lastUpdated): every non-patient actor they name is an actor of the
Slot's Schedule, for every code system both name in serviceType they share a code (so a
virtual request never fits an in-person slot), and the Slot lies inside one of their
requestedPeriods. Offering it is a plain update of that Appointment to `booked` with the
Slot (the booking rule takes the Slot, or answers 409 if someone was faster). Staff only:
the answer shows other patients' appointments (user/ or system/ Appointment search).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fhirpm.fhir import jsonio
from fhirpm.fhir.bundles import bundle
from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository import access
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from fhirpm.scheduling import lookup, model

if TYPE_CHECKING:
    from fhirpm.repository.reach import Policy
    from fhirpm.storage.port import ResourceVersion

DEFINITION = "http://fhirpm.org/OperationDefinition/waitlist"
_PATIENTS = ("Patient", "RelatedPerson")


async def waitlist(ix: Interactions, req: FhirRequest, type: str | None,
                   id: str | None) -> FhirResponse:
    assert id is not None  # instance level only
    slot = jsonio.loads((await ix.repo.read("Slot", id)).body)
    sid = model.local_id((slot.get("schedule") or {}).get("reference"), "Schedule")
    schedule = jsonio.loads((await ix.repo.read("Schedule", sid)).body) if sid else {}
    waiting = await lookup.search(ix.repo, "Appointment", [("status", "waitlist")],
                                  everything=True)
    fits = sorted((v for v in waiting if fits_slot(jsonio.loads(v.body), slot, schedule)),
                  key=_first_come)
    entries = [{"fullUrl": f"{req.base}/Appointment/{v.id}",
                "resource": jsonio.raw(v.body), "search": {"mode": "match"}} for v in fits]
    return FhirResponse(200, bundle("searchset", entries, total=len(entries)))


def fits_slot(appointment: dict[str, Any], slot: dict[str, Any],
              schedule: dict[str, Any]) -> bool:
    """Whether a waitlisted Appointment can take this Slot (module doc)."""
    offered = {(a.get("reference") or "") for a in schedule.get("actor") or ()}
    for p in appointment.get("participant") or ():
        ref = (p.get("actor") or {}).get("reference") or ""
        if ref and not any(model.local_id(ref, t) for t in _PATIENTS) and ref not in offered:
            return False
    services = slot.get("serviceType") or schedule.get("serviceType")
    if not _same_service(appointment.get("serviceType"), services):
        return False
    periods = appointment.get("requestedPeriod") or ()
    return not periods or any(_inside(slot, p) for p in periods)


def _same_service(wanted: Any, offered: Any) -> bool:
    """For every code system both sides use, they share a code."""
    want, have = _codes(wanted), _codes(offered)
    return all(want[system] & have[system] for system in want.keys() & have.keys())


def _codes(concepts: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for concept in concepts or ():
        for c in concept.get("coding") or ():
            out.setdefault(c.get("system") or "", set()).add(c.get("code") or "")
    return out


def _inside(slot: dict[str, Any], period: dict[str, Any]) -> bool:
    try:
        start, end = _moment(slot["start"]), _moment(slot["end"])
        lo = _moment(period["start"]) if period.get("start") else None
        hi = _moment(period["end"]) if period.get("end") else None
    except (KeyError, TypeError, ValueError):
        return False
    return (lo is None or start >= lo) and (hi is None or end <= hi)


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    # a date or a dateTime without zone (FHIR allows both in a Period): read as UTC
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _first_come(version: ResourceVersion) -> tuple[str, str]:
    created = jsonio.loads(version.body).get("created") or ""
    return (created or version.last_updated, version.last_updated)


async def _may_see(ix: Interactions, policy: Policy, spec: Any, type: str | None,
                   id: str | None) -> None:
    """Other patients' appointments: staff with unbounded Appointment search only."""
    policy.reach("Slot", "r")
    if not policy.everything("Appointment", "s"):
        raise policy.refusal("Appointment", "s", "$waitlist lists every patient's waiting "
                             "appointments: it needs a user/ or system/ Appointment scope")


def install(interactions: Interactions) -> None:
    register(interactions, OperationSpec(
        name="waitlist", definition=DEFINITION, handler=waitlist, instance=True,
        types=("Slot",), documentation="Waitlisted Appointments this Slot can serve, "
        "first come first served"))
    access.OPERATIONS["waitlist"] = _may_see
