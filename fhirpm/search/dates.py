"""FHIR date, dateTime and instant values as inclusive UTC microsecond ranges.

`2024` -> all of 2024; `2024-03` -> March; `2024-03-05` -> that day (UTC, since a date has
no zone); a dateTime with seconds -> that second, or exactly that instant with fractions.
Values without a zone are read as UTC (documented: the spec leaves it to the server).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

from fhirpm.errors import Category, FhirError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PATTERN = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def date_range(value: str) -> tuple[int, int] | None:
    """The inclusive [lo, hi] microsecond range a FHIR date/dateTime/instant covers."""
    m = _PATTERN.match(value.strip())
    if not m:
        return None
    try:
        year = int(m["y"])
        if m["m"] is None:
            lo = datetime(year, 1, 1, tzinfo=UTC)
            hi = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
        elif m["d"] is None:
            month = int(m["m"])
            lo = datetime(year, month, 1, tzinfo=UTC)
            hi = lo + timedelta(days=calendar.monthrange(year, month)[1])
        else:
            lo, hi = _day_or_time(m, year)
    except (ValueError, OverflowError):
        return None
    lo_us = _micros(lo)
    hi_us = _micros(hi) - 1 if hi is not None else _micros(datetime(9999, 12, 31, 23, 59, 59,
                                                                    999999, tzinfo=UTC))
    return lo_us, hi_us


def _day_or_time(m: re.Match[str], year: int) -> tuple[datetime, datetime]:
    tz = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
        from datetime import timezone

        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    base = datetime(year, int(m["m"]), int(m["d"]), tzinfo=tz)
    if m["H"] is None:
        return base, base + timedelta(days=1)
    start = base.replace(hour=int(m["H"]), minute=int(m["M"] or 0))
    if m["S"] is None:
        return start, start + timedelta(minutes=1)
    start = start.replace(second=int(m["S"]))
    if m["f"] is None:
        return start, start + timedelta(seconds=1)
    digits = m["f"][:6]
    start = start.replace(microsecond=int(digits.ljust(6, "0")))
    return start, start + timedelta(microseconds=10 ** (6 - len(digits)))


def to_instant_text(micros: int) -> str:
    """Microseconds -> the fixed-width instant text the stores compare (`...%fZ`)."""
    dt = _EPOCH + timedelta(microseconds=micros)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant_param(name: str, value: str) -> str:
    """A client-supplied instant (e.g. `_since`) as fixed-width UTC text; 400 if malformed."""
    found = date_range(value)
    if found is None:
        raise FhirError(Category.INVALID, f"{name}={value!r} is not a valid FHIR instant",
                        expression=(name,))
    return to_instant_text(found[0])
