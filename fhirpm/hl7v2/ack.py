"""Acknowledgements: building ACK messages (AA/AE/AR, CA/CE/CR) with ERR, and reading them.

Original mode (MSH-15/16 empty): one application ACK after the message and its resources
are committed. Enhanced mode: an accept ACK (CA/CE/CR) once the raw message is committed,
as MSH-15 asks, then the application ACK as MSH-16 asks (table 0155: AL always, NE never,
ER only on error, SU only on success).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

from fhirpm.hl7v2.parser import Header, V2Error, escape

_counter = itertools.count(1)


def control_id() -> str:
    """A new MSH-10 for messages we originate (unique within this process and time)."""
    return f"{time.time_ns() // 1_000_000:x}{next(_counter) % 100000:05d}"


def timestamp() -> str:
    return time.strftime("%Y%m%d%H%M%S+0000", time.gmtime())


def wanted(condition: str, ok: bool) -> bool:
    """Table 0155: should an acknowledgement be sent for this outcome?"""
    condition = (condition or "AL").upper()
    return condition == "AL" or (condition == "ER" and not ok) or (condition == "SU" and ok)


def build(header: Header | None, code: str, *, text: str = "", error: V2Error | None = None,
          application: str = "FHIRPM", facility: str = "") -> str:
    """An ACK for `header` (None when the message could not even be read)."""
    h = header
    version = (h.version if h else "") or "2.5.1"
    event = h.event if h else ""
    msh = "|".join([
        "MSH", "^~\\&", application, facility, h.sending_application if h else "",
        h.sending_facility if h else "", timestamp(), "", f"ACK^{event}^ACK", control_id(),
        (h.processing_id if h else "") or "P", version])
    msa = f"MSA|{code}|{escape(h.control_id) if h else ''}"
    if text:
        msa += f"|{escape(text[:80])}"
    segments = [msh, msa]
    if error is not None:
        segments.append(err_segment(error))
    return "\r".join(segments) + "\r"


def err_segment(error: V2Error) -> str:
    """ERR (v2.5 layout): location, HL7 error code (table 0357), severity, diagnostics."""
    location = ""
    if error.segment:
        location = f"{error.segment}^{error.sequence or 1}"
        if error.position:
            location += f"^{error.position}"
    code = f"{error.hl7_code}^{_ERROR_TEXT.get(error.hl7_code, 'Application error')}^HL70357"
    return f"ERR||{location}|{code}|E||||{escape(error.diagnostics[:1000])}"


_ERROR_TEXT = {
    "100": "Segment sequence error", "101": "Required field missing", "102": "Data type error",
    "103": "Table value not found", "200": "Unsupported message type",
    "201": "Unsupported event code", "202": "Unsupported processing id",
    "203": "Unsupported version id", "204": "Unknown key identifier",
    "205": "Duplicate key identifier", "206": "Application record locked",
    "207": "Application internal error",
}


@dataclass(frozen=True, slots=True)
class AckInfo:
    code: str  # AA AE AR CA CE CR
    control_id: str  # MSA-2: the acknowledged message
    text: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.code in ("AA", "CA")

    @property
    def commit_only(self) -> bool:
        return self.code.startswith("C")


def read(text: str) -> AckInfo:
    """Read an ACK (raises V2Error when it is not one)."""
    from fhirpm.errors import Category
    from fhirpm.hl7v2 import parser

    msg = parser.parse(text)
    msa = msg.first("MSA")
    if msa is None:
        raise V2Error(Category.STRUCTURE, "Acknowledgement has no MSA segment", hl7_code="100")
    err = msg.first("ERR")
    return AckInfo(msa.value(1), msa.value(2), msa.value(3),
                   err.value(8) or err.value(3, 2) if err else "")
