"""Index entries of an AuditEvent without FHIRPath: the audit trail's hot path.

Every read stores an AuditEvent, and the general extractor evaluates each search
parameter's FHIRPath expression (~0.5 ms for an AuditEvent: more than the read it
records). AuditEvents have a fixed, shallow shape, so each standard parameter's elements
are picked here directly; the values then go through the registry indexer's own compiled
steps and converters, so the entries are exactly those `Indexer.extract` would make
(tests/audit/test_index.py holds the two equal). Parameters not known here (a custom
SearchParameter on AuditEvent) fall back to their FHIRPath.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from fhirpm.search.extract import OF_TYPE_SUFFIX, _of_type
from fhirpm.search.values import IndexEntry

log = logging.getLogger("fhirpm.audit")

TYPE = "AuditEvent"
Picker = Callable[[dict[str, Any]], list[Any]]


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _each(element: str, field: str) -> Picker:
    def pick(event: dict[str, Any]) -> list[Any]:
        out = []
        for item in _list(event.get(element)):
            if isinstance(item, dict):
                out.extend(_list(item.get(field)))
        return out
    return pick


def _nested(element: str, middle: str, field: str) -> Picker:
    def pick(event: dict[str, Any]) -> list[Any]:
        out = []
        for item in _list(event.get(element)):
            inner = item.get(middle) if isinstance(item, dict) else None
            if isinstance(inner, dict):
                out.extend(_list(inner.get(field)))
        return out
    return pick


def _field(*path: str) -> Picker:
    def pick(event: dict[str, Any]) -> list[Any]:
        value: Any = event
        for step in path:
            if not isinstance(value, dict):
                return []
            value = value.get(step)
        return _list(value)
    return pick


def _patients(event: dict[str, Any]) -> list[Any]:
    """`agent.who.where(resolve() is Patient) | entity.what.where(resolve() is Patient)`."""
    refs = _each("agent", "who")(event) + _each("entity", "what")(event)
    return [r for r in refs if isinstance(r, dict) and isinstance(r.get("reference"), str)
            and _is_patient(r["reference"])]


def _is_patient(reference: str) -> bool:
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return len(parts) >= 2 and parts[-2] == "Patient"


PICKERS: dict[str, Picker] = {
    "_lastUpdated": _field("meta", "lastUpdated"),
    "_profile": _field("meta", "profile"),
    "_security": _field("meta", "security"),
    "_source": _field("meta", "source"),
    "_tag": _field("meta", "tag"),
    "action": _field("action"),
    "address": _nested("agent", "network", "address"),
    "agent": _each("agent", "who"),
    "agent-name": _each("agent", "name"),
    "agent-role": _each("agent", "role"),
    "altid": _each("agent", "altId"),
    "date": _field("recorded"),
    "entity": _each("entity", "what"),
    "entity-name": _each("entity", "name"),
    "entity-role": _each("entity", "role"),
    "entity-type": _each("entity", "type"),
    "outcome": _field("outcome"),
    "patient": _patients,
    "policy": _each("agent", "policy"),
    "site": _field("source", "site"),
    "source": _field("source", "observer"),
    "subtype": _field("subtype"),
    "type": _field("type"),
}


# parameters whose values are new in (nearly) every event: converted without the cache
_UNIQUE = frozenset({"_lastUpdated", "date"})
_CACHE_LIMIT = 50_000


class AuditIndexer:
    """`extract(event)`: the index entries of one AuditEvent (module doc).

    Most values repeat from event to event (the server, the client, the user, the event
    type and subtype, codings of entity types and roles), so their entries are memoised by
    (parameter, value)."""

    def __init__(self, indexer: Any) -> None:
        self.indexer = indexer
        self._cache: dict[tuple[str, Any], tuple[IndexEntry, ...]] = {}

    def extract(self, event: dict[str, Any]) -> list[IndexEntry]:
        plan = getattr(self.indexer, "plan", None)
        if plan is None:  # not the registry indexer: nothing to borrow steps from
            return self.indexer.extract(TYPE, event)
        entries: list[IndexEntry] = []
        focus, env = [event], (event, event)
        present = event.keys()
        for code, convert, fn, keys, of_type in plan(TYPE):
            if keys is not None and present.isdisjoint(keys):
                continue
            pick = PICKERS.get(code)
            try:
                values = pick(event) if pick is not None else fn(focus, env)
                if not values:
                    continue
                if pick is None or code in _UNIQUE:
                    found = self._convert(code, convert, of_type, values)
                else:
                    found = [e for value in values
                             for e in self._cached(code, convert, of_type, value)]
                if len(found) > 1:
                    found = list(dict.fromkeys(found))
                entries += found
            except Exception:  # as the general extractor: never fail the write
                log.warning("AuditEvent index extraction failed", exc_info=True,
                            extra={"param": code})
        return entries

    def _cached(self, code: str, convert: Any, of_type: bool,
                value: Any) -> tuple[IndexEntry, ...]:
        key = (code, value if isinstance(value, str) else orjson.dumps(
            value, option=orjson.OPT_SORT_KEYS))
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[key] = tuple(self._convert(code, convert, of_type, [value]))
        return found

    @staticmethod
    def _convert(code: str, convert: Any, of_type: bool, values: list[Any]
                 ) -> list[IndexEntry]:
        # the general extractor's order: a parameter's `:of-type` entries, then its own
        found = [IndexEntry(code, v) for value in values for v in convert(value)]
        if of_type:
            return [IndexEntry(code + OF_TYPE_SUFFIX, t) for value in values
                    if isinstance(value, dict) and "type" in value
                    for t in _of_type(value)] + found
        return found
