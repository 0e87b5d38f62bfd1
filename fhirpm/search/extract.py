"""Write-time extraction of search index values (see `search.values`).

`RegistryIndexer` evaluates, for a resource, every registered parameter of its type: the
parameter's FHIRPath expression is compiled once per (expression, type) by
`search.fhirpath`, and each selected value is converted by one function per parameter type:

- string: a primitive -> itself; HumanName / Address -> every part (family, given, prefix,
  suffix, line, city, district, state, postalCode, country) and `text`. `norm` is
  `normalize.fold(raw)`.
- token: Coding -> (system, code, text = folded display); CodeableConcept -> each coding,
  plus (None, None, folded text) for its `text`; Identifier -> (system, value, folded
  type.text), and for each `type` coding one more entry under the code `<param>:of-type`
  with system `"<type system>|<type code>"` and code = the identifier value; ContactPoint ->
  (its system code such as `phone`, value); code/string/id/uri -> (None, value), except
  that a `code` element with a required binding to a single code system gets that system
  (`Patient.gender` -> (http://hl7.org/fhir/administrative-gender, "female"), as the spec
  reads a code's implicit system); boolean -> (None, "true"/"false").
- reference: Reference.reference split by `normalize.split_reference` (relative `Type/id`,
  absolute URL also parsed into type/id, canonical `url|version`; contained `#id` skipped;
  an absolute URL under the server's own base is made relative first),
  with Reference.identifier as `identifier`; a canonical/uri string likewise; a resource
  (Bundle.entry[0].resource) -> its type and id.
- date: date/dateTime/instant via `dates.date_range`; Period start..end (an open end ->
  the smallest/largest representable instant); Timing -> the envelope of its events and
  repeat.boundsPeriod (the spec: "only the outer limits matter").
- number: the value with the implicit range of its written precision.
- quantity: Quantity/Age/Duration/Count/Distance (value, system, code, unit); Money (value,
  `urn:iso:std:iso:4217`, currency); Range -> low..high (open ends infinite).
- uri: the string as written.
- composite and special: no entries (components are evaluated from their own parameters).

An expression this compiler cannot handle is logged once and skipped (`skipped` lists
them); a value that does not convert is ignored, never an error: the resource has already
passed validation and indexing must not fail a write.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache, partial
from typing import Any, Protocol

from fhirpm.fhir.bindings import BindingChecker
from fhirpm.search import fhirpath
from fhirpm.search.dates import date_range
from fhirpm.search.normalize import decimal_bounds, fold, split_reference
from fhirpm.search.registry import Registry, SearchParamDef
from fhirpm.search.values import (
    DateValue,
    IndexEntry,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

log = logging.getLogger("fhirpm.search")

MIN_INSTANT = date_range("0001")[0]  # type: ignore[index]
MAX_INSTANT = date_range("9999")[1]  # type: ignore[index]
CURRENCY_SYSTEM = "urn:iso:std:iso:4217"
OF_TYPE_SUFFIX = ":of-type"
# Parameters every store adapter (and the in-memory oracle) answers from the resource
# itself, never from index entries: `_id` is its id. Extracted only when asked for (`only`).
FROM_THE_RESOURCE = frozenset({"_id"})

Converter = Callable[[Any], Iterator[IndexValue]]


class Indexer(Protocol):
    def extract(self, type: str, resource: dict[str, Any], *,
                only: Collection[str] | None = None) -> list[IndexEntry]: ...


# -- converters, one per parameter type --------------------------------------------------

_STRING_PARTS = ("text", "family", "given", "prefix", "suffix", "line", "city", "district",
                 "state", "postalCode", "country")


# Values repeat across resources (codes, systems, names, references, dates), and building
# a frozen dataclass costs more than a cache lookup: the common ones are memoised.
_CACHE = 1 << 14  # per kind: bounded memory, still most repeats


@lru_cache(maxsize=_CACHE)
def _string_value(raw: str) -> StringValue:
    return StringValue(fold(raw), raw)


@lru_cache(maxsize=_CACHE)
def _token_value(system: str | None, code: str | None, text: str | None = None) -> TokenValue:
    return TokenValue(system, code, text)


@lru_cache(maxsize=_CACHE)
def _date_value(text: str) -> DateValue | None:
    found = _text_range(text)
    return DateValue(*found) if found is not None else None


def _text_range(text: str) -> tuple[int, int] | None:
    return _instant_range(text) or date_range(text)


# A dateTime to the second (or finer) with a zone, as servers and Synthea write them:
# `datetime.fromisoformat` reads it several times faster than the general `date_range`
# (every resource has at least one: `meta.lastUpdated`); anything else goes the long way.
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant_range(text: str) -> tuple[int, int] | None:
    """[lo, hi] in epoch microseconds, as `date_range` gives; None: not this form."""
    m = _INSTANT.fullmatch(text)
    if m is None or text.startswith("9999"):  # the end of time: date_range's own rules
        return None
    try:
        delta = datetime.fromisoformat(text) - _EPOCH
    except ValueError:
        return None
    lo = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    digits = len(m[1]) - 1 if m[1] else 0
    return lo, lo + 10 ** (6 - digits) - 1


@lru_cache(maxsize=_CACHE)
def _reference_value(ref: str) -> ReferenceValue | None:
    type_name, id_, url, version = split_reference(ref)
    return ReferenceValue(type_name, id_, url, version) if type_name or url else None


def _string(value: Any) -> Iterator[IndexValue]:
    if isinstance(value, str):
        yield _string_value(value)
    elif type(value) is dict:
        for key in _STRING_PARTS:
            part = value.get(key)
            if isinstance(part, str):
                yield _string_value(part)
            elif type(part) is list:
                for item in part:
                    if isinstance(item, str):
                        yield _string_value(item)


def _text(value: Any) -> str | None:
    return fold(value) if isinstance(value, str) and value else None


def _coding(coding: Any) -> TokenValue | None:
    if type(coding) is not dict:
        return None
    system, code = coding.get("system"), coding.get("code")
    if system is None and code is None:
        return None
    return _token_value(system, code, _text(coding.get("display")))


def _token(value: Any, system: str | None = None) -> Iterator[IndexValue]:
    if isinstance(value, bool):
        yield _token_value(None, "true" if value else "false")
    elif isinstance(value, str):
        yield _token_value(system, value)
    elif isinstance(value, int | Decimal):
        yield _token_value(None, str(value))
    elif type(value) is dict:
        if "coding" in value or ("text" in value and "value" not in value):
            for coding in value.get("coding") or ():
                token = _coding(coding)
                if token is not None:
                    yield token
            text = _text(value.get("text"))
            if text:
                yield _token_value(None, None, text)
        elif "value" in value:  # Identifier or ContactPoint
            kind = value.get("type")
            label = _text(kind.get("text")) if type(kind) is dict else None
            if isinstance(value["value"], str):
                yield _token_value(value.get("system"), value["value"], label)
        else:
            token = _coding(value)
            if token is not None:
                yield token


def _of_type(value: Any) -> Iterator[TokenValue]:
    """Identifier type codings, for `:of-type` (see the module docstring)."""
    if type(value) is not dict or not isinstance(value.get("value"), str):
        return
    kind = value.get("type")
    for coding in (kind.get("coding") or ()) if type(kind) is dict else ():
        if type(coding) is dict and coding.get("code"):
            yield TokenValue(f"{coding.get('system') or ''}|{coding['code']}", value["value"])


def _reference(value: Any, local_base: str | None = None) -> Iterator[IndexValue]:
    if isinstance(value, str):
        found = _reference_value(_localise(value, local_base))
        if found is not None:
            yield found
        return
    if type(value) is not dict:
        return
    if "resourceType" in value:
        yield ReferenceValue(value["resourceType"], value.get("id"))
        return
    ref = value.get("reference")
    if isinstance(ref, str):
        ref = _localise(ref, local_base)
    ident = value.get("identifier")
    if ident is None:
        found = _reference_value(ref) if isinstance(ref, str) else None
        if found is not None:
            yield found
        return
    type_name = id_ = url = version = None
    if isinstance(ref, str):
        type_name, id_, url, version = split_reference(ref)
    identifier = None
    if type(ident) is dict and (ident.get("value") is not None or ident.get("system")):
        identifier = TokenValue(ident.get("system"), ident.get("value"))
    if type_name or url or identifier:
        yield ReferenceValue(type_name, id_, url, version, identifier)


def _localise(ref: str, local_base: str | None) -> str:
    """`<our base>/Patient/1` is the local `Patient/1`."""
    if local_base and ref.startswith(local_base) and ref[len(local_base):len(local_base) + 1] \
            == "/":
        return ref[len(local_base) + 1:]
    return ref


def _period(start: Any, end: Any) -> DateValue | None:
    lo_range = _text_range(start) if isinstance(start, str) else None
    hi_range = _text_range(end) if isinstance(end, str) else None
    lo = lo_range[0] if lo_range else None
    hi = hi_range[1] if hi_range else None
    if lo is None and hi is None:
        return None
    return DateValue(MIN_INSTANT if lo is None else lo, MAX_INSTANT if hi is None else hi)


def _date(value: Any) -> Iterator[IndexValue]:
    if isinstance(value, str):
        found = _date_value(value)
        if found is not None:
            yield found
    elif type(value) is dict:
        if "start" in value or "end" in value:
            period = _period(value.get("start"), value.get("end"))
            if period is not None:
                yield period
        elif "event" in value or "repeat" in value:
            yield from _timing(value)


def _timing(timing: dict[str, Any]) -> Iterator[DateValue]:
    ranges = [r for e in timing.get("event") or () if isinstance(e, str)
              for r in (_text_range(e),) if r is not None]
    repeat = timing.get("repeat")
    bounds = repeat.get("boundsPeriod") if type(repeat) is dict else None
    if type(bounds) is dict:
        period = _period(bounds.get("start"), bounds.get("end"))
        if period is not None:
            ranges.append((period.lo, period.hi))
    if ranges:
        yield DateValue(min(r[0] for r in ranges), max(r[1] for r in ranges))


def _number(value: Any) -> Iterator[IndexValue]:
    if type(value) is dict:
        value = value.get("value")
    found = decimal_bounds(value) if isinstance(value, int | Decimal | float) else None
    if found is not None:
        yield NumberValue(*found)


def _quantity(value: Any) -> Iterator[IndexValue]:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        found = decimal_bounds(value)
        if found is not None:
            yield QuantityValue(*found, None, None, None)
        return
    if type(value) is not dict:
        return
    if "low" in value or "high" in value:
        yield from _range(value.get("low"), value.get("high"))
        return
    found = decimal_bounds(value["value"]) if "value" in value else None
    if found is None:
        return
    if "currency" in value:
        yield QuantityValue(*found, CURRENCY_SYSTEM, value.get("currency"), None)
    else:
        yield QuantityValue(*found, value.get("system"), value.get("code"), value.get("unit"))


def _range(low: Any, high: Any) -> Iterator[QuantityValue]:
    lo_q = decimal_bounds(low["value"]) if type(low) is dict and "value" in low else None
    hi_q = decimal_bounds(high["value"]) if type(high) is dict and "value" in high else None
    if lo_q is None and hi_q is None:
        return
    unit_of = low if lo_q is not None else high
    value = lo_q[0] if lo_q is not None else hi_q[0]  # type: ignore[index]
    yield QuantityValue(value, lo_q[1] if lo_q else float("-inf"),
                        hi_q[2] if hi_q else float("inf"),
                        unit_of.get("system"), unit_of.get("code"), unit_of.get("unit"))


def _uri(value: Any) -> Iterator[IndexValue]:
    if isinstance(value, str):
        yield UriValue(value)


CONVERTERS: dict[str, Converter] = {
    "string": _string, "token": _token, "reference": _reference, "date": _date,
    "number": _number, "quantity": _quantity, "uri": _uri,
}


# -- the indexer ---------------------------------------------------------------------------

# code, converter, compiled expression, root keys it needs (None: always run), of-type
Step = tuple[str, Converter, fhirpath.Fn, frozenset[str] | None, bool]


class RegistryIndexer:
    """Extracts every registered parameter of a resource's type (the `Indexer` protocol)."""

    def __init__(self, registry: Registry, bindings: BindingChecker | None = None, *,
                 local_base: str | None = None) -> None:
        self.registry = registry
        self.bindings = bindings or BindingChecker.load_default()
        # absolute references under the server's own base URL are indexed as local ones
        self.local_base = local_base.rstrip("/") if local_base else None
        self.skipped: dict[str, str] = {}  # parameter url -> why its expression is not used
        self._plans: dict[str, list[Step]] = {}  # the steps whose entries are stored
        self._every: dict[str, list[Step]] = {}  # and the registry's aliases' steps
        self._meta: dict[str, list[Step]] = {}  # plan steps that read server meta
        # (id of a plan or meta list, a resource's top-level keys) -> the steps that can
        # find anything there: resources of a type share a few key sets, and testing every
        # step of a plan against every resource cost more than most steps themselves
        self._selected: dict[tuple[int, frozenset[str]], list[Step]] = {}
        self._revision = registry.revision

    def extract(self, type: str, resource: dict[str, Any], *,
                only: Collection[str] | None = None,
                exclude: Collection[str] = ()) -> list[IndexEntry]:
        """`only`: just these parameter codes (an access check needs a few, not all; an
        alias among them gets its own entries); `exclude`: all but these (`meta_codes`,
        when the meta is not final yet). Without `only`, the entries to store: none for
        the registry's aliases (their searches read the entries of the code they alias)
        nor for `FROM_THE_RESOURCE`."""
        steps = self.plan(type) if only is None else self.plan(type, aliases=True)
        return self._run(type, steps, resource, only, exclude)

    def _run(self, type: str, steps: list[Step], resource: dict[str, Any],
             only: Collection[str] | None = None,
             exclude: Collection[str] = ()) -> list[IndexEntry]:
        entries: list[IndexEntry] = []
        focus, env = [resource], (resource, resource)
        for code, convert, fn, _keys, of_type in self._applicable(steps, resource):
            if (only is not None and code not in only) or code in exclude:
                continue
            try:
                values = fn(focus, env)
                if not values:
                    continue
                found = [v for value in values for v in convert(value)]
                if of_type:
                    entries += [IndexEntry(code + OF_TYPE_SUFFIX, t) for value in values
                                if isinstance(value, dict) and "type" in value
                                for t in _of_type(value)]
                # duplicates come from unions and repeated parts: drop them per parameter
                if len(found) > 1:
                    found = list(dict.fromkeys(found))
                entries += [IndexEntry(code, v) for v in found]
            except Exception:  # a malformed value must never fail the write
                log.warning("index extraction failed", exc_info=True,
                            extra={"param": code, "resource_type": type})
        return entries

    def _applicable(self, steps: list[Step], resource: dict[str, Any]) -> list[Step]:
        """The steps that read at least one element `resource` has (or read anything)."""
        present = frozenset(resource)
        key = (id(steps), present)
        found = self._selected.get(key)
        if found is None:
            if len(self._selected) >= _SELECTED_MAX:
                self._selected.clear()
            found = self._selected[key] = [
                step for step in steps if step[3] is None or not present.isdisjoint(step[3])]
        return found

    def meta_codes(self, type: str) -> frozenset[str]:
        """The codes of `type` whose values may depend on what the server sets when it
        writes (`meta.versionId`, `meta.lastUpdated`: `_lastUpdated`), or on anything
        (expressions whose elements are not known): what must be extracted again once a
        resource extracted ahead has its real meta (`extract_meta`)."""
        return frozenset(step[0] for step in self._meta_steps(type))

    def extract_meta(self, type: str, resource: dict[str, Any]) -> list[IndexEntry]:
        """`extract(type, resource, only=meta_codes(type))`, without walking the others."""
        return self._run(type, self._meta_steps(type), resource)

    def _meta_steps(self, type: str) -> list[Step]:
        steps = self.plan(type)  # first: a registry change clears the meta steps too
        found = self._meta.get(type)
        if found is None:
            params = self.registry.for_type(type)
            found = self._meta[type] = [step for step in steps if _reads_server_meta(
                params[step[0]], type, step[3])]
        return found

    def plan(self, type: str, *, aliases: bool = False) -> list[Step]:
        """The compiled steps for `type` (with `aliases`: the registry's aliases' too),
        rebuilt when the registry changes."""
        if self._revision != self.registry.revision:
            self._plans.clear()
            self._every.clear()
            self._meta.clear()
            self._selected.clear()  # keyed by the ids of the lists just dropped
            self._revision = self.registry.revision
        every = self._every.get(type)
        if every is None:
            every = self._every[type] = self._build(type)
            skipped = self.registry.aliases().get(type, {}).keys() | FROM_THE_RESOURCE
            self._plans[type] = [step for step in every if step[0] not in skipped]
        return every if aliases else self._plans[type]

    def _build(self, type: str) -> list[Step]:
        steps: list[Step] = []
        for code, param in sorted(self.registry.for_type(type).items()):
            convert = CONVERTERS.get(param.type)
            if convert is None or not param.expression:
                continue
            compiled = self._compile(param, type)
            if compiled is None or compiled.never_matches:
                continue
            if param.type == "token":
                system = self._code_system(param, type)
                if system is not None:
                    convert = partial(_token, system=system)
            elif param.type == "reference" and self.local_base:
                convert = partial(_reference, local_base=self.local_base)
            keys = None if compiled.root_keys is None else frozenset(compiled.root_keys)
            steps.append((code, convert, compiled.fn, keys, param.type == "token"))
        return steps

    def _code_system(self, param: SearchParamDef, type: str) -> str | None:
        """The system a `code` element's required binding implies (`gender` -> the
        administrative-gender system), so `gender=<system>|male` matches."""
        chains = fhirpath.member_chains(param.expression or "", type)
        if not chains:
            return None
        systems = {self.bindings.code_system(type, chain) for chain in chains}
        return systems.pop() if len(systems) == 1 else None

    def _compile(self, param: SearchParamDef, type: str) -> fhirpath.Compiled | None:
        try:
            return fhirpath.compile(param.expression or "", type)
        except fhirpath.FhirPathError as exc:
            if param.url not in self.skipped:
                self.skipped[param.url] = str(exc)
                log.warning("search parameter not indexed: %s", exc,
                            extra={"param": param.code, "url": param.url})
            return None


_SELECTED_MAX = 4096  # key sets remembered (then start afresh): bounded memory

_SERVER_META = ("versionId", "lastUpdated")


def _reads_server_meta(param: SearchParamDef, type: str, keys: frozenset[str] | None) -> bool:
    """Whether a parameter's values may change when the server sets versionId and
    lastUpdated (True when its expression is not a plain path: it might)."""
    if keys is not None and "meta" not in keys:
        return False
    chains = fhirpath.member_chains(param.expression or "", type)
    if chains is None:
        return True
    return any(c[0] == "meta" and (len(c) == 1 or c[1] in _SERVER_META) for c in chains)


def index_values(param_type: str, value: Any) -> list[IndexValue]:
    """One selected value as index values of a parameter type (`[]` for composite/special)."""
    convert = CONVERTERS.get(param_type)
    return list(dict.fromkeys(convert(value))) if convert is not None else []


def component_values(registry: Registry, param: SearchParamDef, type: str,
                     resource: dict[str, Any]) -> list[tuple[list[IndexValue], ...]]:
    """For a composite parameter: per item its expression selects (an Observation, each
    component, ...), the index values of every component, in definition order. A component
    whose definition is unknown or whose expression does not compile gives no values."""
    if param.type != "composite" or not param.expression:
        return []
    out: list[tuple[list[IndexValue], ...]] = []
    for item in fhirpath.compile(param.expression, type)(resource):
        row: list[list[IndexValue]] = []
        for component in param.component:
            definition = registry.by_url.get(component.definition)
            try:
                selected = fhirpath.compile(component.expression)(item, resource)
            except fhirpath.FhirPathError:
                selected = []
            kind = definition.type if definition is not None else ""
            row.append([v for value in selected for v in index_values(kind, value)])
        out.append(tuple(row))
    return out


def compile_coverage(registry: Registry) -> tuple[int, dict[str, str]]:
    """How many (parameter, base type) expressions compile, and why the others do not."""
    compiled, failed = 0, {}
    for param in registry.by_url.values():
        if not param.expression or param.type in ("composite", "special"):
            continue
        for base in param.base:
            try:
                fhirpath.compile(param.expression, base)
                compiled += 1
            except fhirpath.FhirPathError as exc:
                failed[f"{param.url} ({base})"] = str(exc)
    return compiled, failed
