"""Small v2 messages written for the bridge's own cases (Z-segments, Latin-1, nulls...)."""

from __future__ import annotations


def adt(event: str = "A08", control: str = "C1", *, pid: str | None = None,
        extra: str = "", msh18: str = "", msh15_16: tuple[str, str] = ("", ""),
        pv1: str = ("PV1|1|O|CLINIC^R1^^PRACTICE||||1234^Welby^Marcus^^^Dr||||||||||||"
                    "V100^^^PRACTICE^VN"),
        sender: str = "EHR") -> str:
    pid = pid or ("PID|1||MRN1^^^PRACTICE^MR||Doe^Jane^Q||19800102|F|||1 Main St^^Springfield"
                  "^IL^62701||555-1234^PRN^PH")
    msh = (f"MSH|^~\\&|{sender}|CLINIC|FHIRPM|PRACTICE|20240102030405+0100||ADT^{event}|{control}"
           f"|P|2.5.1|||{msh15_16[0]}|{msh15_16[1]}||{msh18}")
    segs = [msh, f"EVN|{event}|20240102030405+0100", pid, pv1]
    if extra:
        segs.append(extra)
    return "\r".join(segs) + "\r"


def siu(event: str = "S12", control: str = "S1", *, filler: str = "APT1",
        start: str = "20240301090000+0100", status: str = "Booked") -> str:
    return "\r".join([
        f"MSH|^~\\&|SCHED|CLINIC|FHIRPM|PRACTICE|20240102030405+0100||SIU^{event}|{control}|P|2.5.1",
        f"SCH||{filler}^SCHED|||||ROUTINE|Normal|30|min|^^^{start}||||||||||||||{status}",
        "PID|1||MRN1^^^PRACTICE^MR||Doe^Jane||19800102|F",
        "RGS|1",
        "AIP|1||1234^Welby^Marcus|D^Doctor",
    ]) + "\r"
