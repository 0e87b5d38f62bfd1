"""Index entries as plain tuples, to cross a process boundary cheaply.

Pickling the frozen, slotted value dataclasses of `search.values` costs more than
extracting them (~120 us per Synthea resource each way, against ~80 us of extraction), so
a process that extracts for another (`repository.prepare`) sends each entry as one flat
tuple of strings, numbers and None: `(param, kind, *fields)`. Decoding rebuilds the same
`IndexEntry` values; the common ones (codes, systems, shared references) come from a
bounded cache, as extraction itself memoises them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from fhirpm.search.values import (
    DateValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

Row = tuple[Any, ...]

_KINDS: tuple[type, ...] = (StringValue, TokenValue, ReferenceValue, DateValue, NumberValue,
                            QuantityValue, UriValue)
_REFERENCE = _KINDS.index(ReferenceValue)
_IDENTIFIED = len(_KINDS)  # a ReferenceValue with an identifier: its token's fields follow


def _fields_getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    get = attrgetter(*cls.__slots__)
    return get if len(cls.__slots__) > 1 else lambda v: (get(v),)  # type: ignore[return-value]


# per value class: (kind, its fields as a tuple), in one C call
_ENCODER = {cls: (n, _fields_getter(cls)) for n, cls in enumerate(_KINDS)}

_CACHE_LIMIT = 1 << 16
_cache: dict[Row, IndexEntry] = {}


def encode(entries: Sequence[IndexEntry]) -> list[Row]:
    out: list[Row] = []
    for entry in entries:
        v: Any = entry.value
        kind, fields = _ENCODER[type(v)]
        if kind == _REFERENCE and v.identifier is not None:
            ident = v.identifier
            out.append((entry.param, _IDENTIFIED, v.type, v.id, v.url, v.version,
                        ident.system, ident.code, ident.text))
        else:
            out.append((entry.param, kind, *fields(v)))
    return out


def decode(rows: Sequence[Row]) -> list[IndexEntry]:
    out: list[IndexEntry] = []
    cache = _cache
    for row in rows:
        entry = cache.get(row)
        if entry is None:
            entry = _build(row)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()  # bounded memory; the hot values come back at once
            cache[row] = entry
        out.append(entry)
    return out


def _build(row: Row) -> IndexEntry:
    kind = row[1]
    if kind == _IDENTIFIED:
        value: Any = ReferenceValue(*row[2:6], TokenValue(*row[6:9]))
    else:
        value = _KINDS[kind](*row[2:])
    return IndexEntry(row[0], value)
