"""Typed, storage-neutral search index values: what extraction produces at write time and
what every store adapter persists beside a resource.

The shapes are the contract between `search.extract` (producer), the store adapters
(persist and query) and `search.match` (the in-memory oracle). Dates are integer
microseconds since the Unix epoch (UTC) as an inclusive [lo, hi] range that honours the
precision of the source value, so `2024` covers the whole year.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StringValue:
    norm: str  # lower-cased, accent-folded, whitespace-collapsed: for default and :contains
    raw: str  # as written: for :exact


@dataclass(frozen=True, slots=True)
class TokenValue:
    system: str | None
    code: str | None
    text: str | None = None  # normalised display/text, for :text


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    type: str | None  # local reference target type ("Patient"), None for absolute/canonical
    id: str | None
    url: str | None = None  # absolute URL or canonical (without |version)
    version: str | None = None
    identifier: TokenValue | None = None  # Reference.identifier, for :identifier


@dataclass(frozen=True, slots=True)
class DateValue:
    lo: int  # epoch microseconds, inclusive
    hi: int  # epoch microseconds, inclusive


@dataclass(frozen=True, slots=True)
class NumberValue:
    value: float
    lo: float  # implicit range from the value's precision (1.5 covers [1.45, 1.55))
    hi: float


@dataclass(frozen=True, slots=True)
class QuantityValue:
    value: float
    lo: float
    hi: float
    system: str | None
    code: str | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class UriValue:
    uri: str


IndexValue = (
    StringValue | TokenValue | ReferenceValue | DateValue | NumberValue | QuantityValue | UriValue
)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One searchable value of one parameter of one resource.

    `param` is the search parameter code as clients use it ("name", "birthdate", "_id").
    Composite parameters are evaluated from their components' entries; they get no entries of
    their own unless the adapter chooses to materialise them.
    """

    param: str
    value: IndexValue
