"""`_summary` and `_elements`: serving a subset of a stored resource.

Owns the rules for which top-level elements each mode keeps (from the generated table
`tables/summary_elements.json`: per type, the elements marked isSummary and those with
min >= 1) and the SUBSETTED tag a shaped resource carries. Reads and search results both
call `shape`; resources are parsed losslessly (jsonio) only when shaping is asked for, so
plain reads keep serving stored bytes untouched.

    _summary=true   summary elements (+ mandatory ones, so the result stays valid)
    _summary=text   text, id, meta and mandatory elements
    _summary=data   everything but text
    _summary=false  everything (no shaping)
    _elements=a,b   a, b, id, meta and mandatory elements

`_summary=count` is a search-only mode (the search package handles it) and `_summary`
other than `false` combined with `_elements` is refused rather than silently resolved.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio

SUMMARY_MODES = ("true", "text", "data", "count", "false")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "Resource encoded in summary mode"}
_ALWAYS = frozenset({"resourceType", "id", "meta"})

@cache
def _table() -> dict[str, dict[str, list[str]]]:
    path = resources.files("fhirpm.fhir").joinpath("tables/summary_elements.json")
    return json.loads(path.read_bytes())


@cache
def choice_suffixes() -> dict[str, frozenset[str]]:
    """Choice element name -> the type suffixes of its JSON names (`value` -> Quantity, ...)."""
    path = resources.files("fhirpm.fhir").joinpath("tables/choice_elements.json")
    return {k: frozenset(v) for k, v in json.loads(path.read_bytes()).items()}


def _names(type: str, kind: str) -> frozenset[str]:
    return frozenset(_table().get(type, {}).get(kind, ()))


def requested(params: Iterable[tuple[str, str]]) -> tuple[str | None, list[str] | None]:
    """`(summary, elements)` asked for by query parameters; 400 on a bad combination."""
    summaries = [v for k, v in params if k == "_summary"]
    element_values = [v for k, v in params if k == "_elements"]
    summary = None
    if summaries:
        if len(summaries) > 1:
            raise FhirError(Category.INVALID, "_summary may be given only once",
                            expression=("_summary",))
        summary = summaries[0].strip()
        if summary not in SUMMARY_MODES:
            raise FhirError(Category.INVALID,
                            f"_summary={summary!r} is not one of {', '.join(SUMMARY_MODES)}",
                            expression=("_summary",))
    elements = [e.strip() for v in element_values for e in v.split(",") if e.strip()] or None
    if elements and summary not in (None, "false"):
        raise FhirError(Category.INVALID,
                        f"_summary={summary} cannot be combined with _elements; use one",
                        expression=("_summary", "_elements"))
    return summary, elements


def shape(body: bytes, summary: str | None, elements: list[str] | None, type: str) -> bytes:
    """The stored resource `body` reduced as `_summary` / `_elements` ask (bytes in, out).

    `type` is the resource type (taken from the body when empty). Returns `body` itself
    when nothing is to be removed.
    """
    if summary == "count":
        raise FhirError(Category.INVALID, "_summary=count applies to searches only",
                        expression=("_summary",))
    if summary in (None, "false") and not elements:
        return body
    resource = jsonio.loads(body)
    type = type or resource.get("resourceType", "")
    keep = _keeper(type, summary, elements)
    out = {k: v for k, v in resource.items() if keep(k.removeprefix("_"))}
    return jsonio.dumps(_tag_subsetted(out))


def _keeper(type: str, summary: str | None,
            elements: list[str] | None) -> Callable[[str], bool]:
    mandatory = _names(type, "mandatory") | _ALWAYS
    if summary == "true":
        wanted = _names(type, "summary") | mandatory
        return wanted.__contains__
    if summary == "text":
        wanted = mandatory | {"text"}
        return wanted.__contains__
    if summary == "data":
        return lambda name: name != "text"
    asked = frozenset(_element_name(e, type) for e in elements or ())
    return lambda name: name in mandatory or name in asked or _choice_of(name, asked)


def _element_name(element: str, type: str) -> str:
    """`Patient.name` -> `name` (R5-style qualified names are accepted too)."""
    prefix = f"{type}."
    return element[len(prefix):] if element.startswith(prefix) else element


def _choice_of(name: str, asked: frozenset[str]) -> bool:
    """`valueQuantity` is kept when `value` (or `value[x]`) was asked for."""
    choices = choice_suffixes()
    for wanted in asked:
        base = wanted.removesuffix("[x]")
        if name.startswith(base) and name[len(base):] in choices.get(base, ()):
            return True
    return False


def _tag_subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with the SUBSETTED tag in meta (meta placed after id if it was absent)."""
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*(t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"), SUBSETTED]
    head = {k: resource[k] for k in ("resourceType", "id") if k in resource}
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    return {**head, "meta": meta, **rest}
