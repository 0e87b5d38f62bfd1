"""FHIR resources -> v2 segments (ER7), the inverse of our inbound mappings for the fields a
partner needs: PID from Patient, PV1 from Encounter, SCH/TQ1/NTE/AIS/AIG/AIL/AIP from
Appointment, FT1 from ChargeItem, MRG from a merged-away Patient.

Written as the exact inverse of what `mappings/` reads (identifier systems back to HD, codes
back through the same vocabularies), so a message we send and receive back changes nothing.
Every value is escaped; nothing here does I/O (the caller resolves references).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhirpm.hl7v2.ack import control_id, timestamp
from fhirpm.hl7v2.engine import OURS
from fhirpm.hl7v2.parser import escape

Resource = dict[str, Any]

_GENDER = {"female": "F", "male": "M", "other": "O", "unknown": "U"}
_NAME_USE = {"official": "L", "usual": "D", "maiden": "M", "nickname": "N", "anonymous": "S",
             "temp": "T", "old": "U"}
_ADDRESS_USE = {"home": "H", "work": "B", "temp": "C", "old": "BA"}
_TELECOM_USE = {"home": "PRN", "work": "WPN", "mobile": "PRS", "temp": "ASN"}
_TELECOM_SYSTEM = {"phone": "PH", "fax": "FX", "pager": "BP", "email": "Internet", "other": "MD"}
_STATUS = {"pending": "Pending", "waitlist": "Waitlist", "booked": "Booked",
           "checked-in": "Started", "fulfilled": "Complete", "cancelled": "Cancelled",
           "entered-in-error": "Deleted", "noshow": "Noshow"}
_CLASS = {"EMER": "E", "IMP": "I", "AMB": "O", "PRENC": "P"}


def e(value: Any) -> str:
    return escape(str(value)) if value is not None else ""


def join(values: list[str], sep: str) -> str:
    while values and not values[-1]:
        values.pop()
    return sep.join(values)


def comp(*values: Any) -> str:
    return join([v if isinstance(v, str) else e(v) for v in values], "^")


def segment(name: str, fields: dict[int, str]) -> str:
    size = max(fields, default=0)
    return join([name, *(fields.get(n, "") for n in range(1, size + 1))], "|")


# -- datatypes ------------------------------------------------------------------------------


def hd(system: str | None) -> tuple[str, str, str]:
    """A system URI back to (namespace, universal id, id type), inverse of `authority`."""
    if not system:
        return "", "", ""
    prefix = f"{OURS}:authority:"
    if system.startswith(prefix):
        from urllib.parse import unquote

        return unquote(system[len(prefix):]), "", ""
    if system.startswith("urn:oid:"):
        return "", system[8:], "ISO"
    if system.startswith("urn:uuid:"):
        return "", system[9:], "UUID"
    return "", system, "URI"


def cx(identifier: Resource) -> str:
    ns, uid, kind = hd(identifier.get("system"))
    authority = join([e(ns), e(uid), e(kind)], "&")
    type_code = ((identifier.get("type") or {}).get("coding") or [{}])[0].get("code", "")
    return comp(e(identifier.get("value")), "", "", authority, e(type_code))


def ei(identifier: Resource) -> str:
    ns, uid, kind = hd(identifier.get("system"))
    return comp(e(identifier.get("value")), e(ns), e(uid), e(kind))


def xpn(name: Resource) -> str:
    given = name.get("given") or []
    return comp(e(name.get("family")), e(given[0] if given else ""),
                e(given[1] if len(given) > 1 else ""), "", "", "",
                _NAME_USE.get(name.get("use", ""), ""))


def xad(address: Resource) -> str:
    lines = address.get("line") or []
    return comp(e(lines[0] if lines else ""), e(lines[1] if len(lines) > 1 else ""),
                e(address.get("city")), e(address.get("state")), e(address.get("postalCode")),
                e(address.get("country")), _ADDRESS_USE.get(address.get("use", ""), ""),
                "", e(address.get("district")))


def xtn(telecom: Resource) -> str:
    system = telecom.get("system", "")
    value = e(telecom.get("value"))
    use = _TELECOM_USE.get(telecom.get("use", ""), "")
    kind = _TELECOM_SYSTEM.get(system, "")
    return comp("" if system == "email" else value, use, kind, value if system == "email" else "")


def xcn(practitioner: Resource) -> str:
    ident = (practitioner.get("identifier") or [{}])[0]
    name = (practitioner.get("name") or [{}])[0]
    given = name.get("given") or []
    ns, uid, kind = hd(ident.get("system"))
    return comp(e(ident.get("value")), e(name.get("family")), e(given[0] if given else ""),
                e(given[1] if len(given) > 1 else ""), "", "", "", "",
                join([e(ns), e(uid), e(kind)], "&"))


def dtm(value: str | None) -> str:
    """FHIR date/dateTime/instant -> DTM, keeping its precision and offset."""
    if not value:
        return ""
    if "T" not in value:
        return value.replace("-", "")
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    text = stamp.strftime("%Y%m%d%H%M%S")
    if stamp.microsecond:
        text += "." + f"{stamp.microsecond:06d}".rstrip("0")
    offset = stamp.strftime("%z")
    return text + (offset or "")


def cwe(concept: Resource | None) -> str:
    coding = ((concept or {}).get("coding") or [{}])[0]
    return comp(e(coding.get("code")), e(coding.get("display")),
                e(system_name(coding.get("system", ""))))


def system_name(system: str) -> str:
    """A coding system URI back to its v2 name (table 0396), inverse of Engine.system."""
    if not system:
        return ""
    if "/CodeSystem/v2-" in system:
        return "HL7" + system.rsplit("/v2-", 1)[1]
    prefix = f"{OURS}:codesystem:"
    if system.startswith(prefix):
        from urllib.parse import unquote

        return unquote(system[len(prefix):])
    return _system_names().get(system, system)


_NAMES: dict[str, str] = {}


def _system_names() -> dict[str, str]:
    if not _NAMES:
        from fhirpm.hl7v2.engine import MappingSet

        codes = MappingSet.load().vocabulary.get("CodingSystem", {}).get("codes", {})
        for name, uri in reversed(list(codes.items())):  # the first name listed wins
            _NAMES[uri] = name
    return _NAMES


# -- segments -------------------------------------------------------------------------------


def msh(code: str, event: str, structure: str, *, application: str, facility: str,
        receiver: str = "", receiver_facility: str = "", version: str = "2.5.1",
        control: str | None = None) -> str:
    return segment("MSH", {1: "^~\\&", 2: e(application), 3: e(facility), 4: e(receiver),
                           5: e(receiver_facility), 6: timestamp(),
                           8: f"{code}^{event}^{structure}", 9: control or control_id(),
                           10: "P", 11: version})


def pid(patient: Resource) -> str:
    birth = patient.get("birthDate")
    fields = {
        1: "1",
        3: "~".join(cx(i) for i in patient.get("identifier") or ()),
        5: "~".join(xpn(n) for n in patient.get("name") or ()),
        7: dtm(birth),
        8: _GENDER.get(patient.get("gender", ""), ""),
        11: "~".join(xad(a) for a in patient.get("address") or ()),
        13: "~".join(xtn(t) for t in patient.get("telecom") or () if t.get("use") != "work"),
        14: "~".join(xtn(t) for t in patient.get("telecom") or () if t.get("use") == "work"),
    }
    if patient.get("deceasedDateTime"):
        fields[29] = dtm(patient["deceasedDateTime"])
    elif "deceasedBoolean" in patient:
        fields[30] = "Y" if patient["deceasedBoolean"] else "N"
    return segment("PID", fields)


def mrg(old: Resource) -> str:
    return segment("MRG", {1: "~".join(cx(i) for i in old.get("identifier") or ())})


def pv1(encounter: Resource) -> str:
    visit = next(iter(encounter.get("identifier") or ()), None)
    period = encounter.get("period") or {}
    return segment("PV1", {
        1: "1", 2: _CLASS.get((encounter.get("class") or {}).get("code", ""), ""),
        19: cx(visit) if visit else "", 44: dtm(period.get("start")),
        45: dtm(period.get("end"))})


def sch(appt: Resource) -> list[str]:
    """SCH, TQ1 and the comment NTE of an Appointment."""
    placer = _typed_identifier(appt, "PLAC")
    filler = _typed_identifier(appt, "FILL") or next(iter(appt.get("identifier") or ()), None)
    start, end = appt.get("start"), appt.get("end")
    fields = {
        1: ei(placer) if placer else "", 2: ei(filler) if filler else "",
        7: cwe(appt.get("appointmentType")) if appt.get("appointmentType") else "",
        11: comp("", "", "", dtm(start), dtm(end)) if start else "",
        25: _STATUS.get(appt.get("status", ""), ""),
    }
    if appt.get("minutesDuration"):
        fields[9], fields[10] = str(appt["minutesDuration"]), "min"
    out = [segment("SCH", fields)]
    if start:
        out.append(segment("TQ1", {1: "1", 7: dtm(start), 8: dtm(end)}))
    if appt.get("comment"):
        out.append(segment("NTE", {1: "1", 3: e(appt["comment"])}))
    return out


def _typed_identifier(resource: Resource, code: str) -> Resource | None:
    for ident in resource.get("identifier") or ():
        for coding in (ident.get("type") or {}).get("coding") or ():
            if coding.get("code") == code:
                return ident
    return None


def resources_group(participants: list[tuple[str, Resource]]) -> list[str]:
    """RGS + AIP/AIL/AIG for the Appointment's non-patient participants."""
    out = [segment("RGS", {1: "1"})]
    for n, (kind, res) in enumerate(participants, start=1):
        if kind == "Practitioner":
            out.append(segment("AIP", {1: str(n), 3: xcn(res)}))
        elif kind == "Location":
            out.append(segment("AIL", {1: str(n), 3: comp(e(res.get("name")))}))
        elif kind == "Device":
            ident = (res.get("identifier") or [{}])[0]
            out.append(segment("AIG", {1: str(n), 3: comp(e(ident.get("value")))}))
    return out


def ft1(charge: Resource, n: int = 1) -> str:
    ident = next(iter(charge.get("identifier") or ()), {})
    price = charge.get("priceOverride") or {}
    quantity = (charge.get("quantity") or {}).get("value")
    return segment("FT1", {
        1: str(n), 2: e(ident.get("value")),
        4: dtm(charge.get("occurrenceDateTime")), 5: dtm(charge.get("enteredDate")),
        6: "CG", 7: cwe(charge.get("code")) or _coded(charge.get("code")),
        10: e(quantity) if quantity is not None else "",
        11: join([e(price.get("value")), e(price.get("currency"))], "&") if price else ""})


def _coded(concept: Resource | None) -> str:
    coding = ((concept or {}).get("coding") or [{}])[0]
    return comp(e(coding.get("code")), e(coding.get("display")))


def message(segments: list[str]) -> str:
    return "\r".join(s for s in segments if s) + "\r"
