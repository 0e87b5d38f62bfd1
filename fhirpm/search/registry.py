"""The search-parameter registry: the official R4 definitions (from a generated table) plus
custom SearchParameter resources created through the API.

Aliases: a parameter that selects on a type exactly what another parameter of that type
selects (same parameter type, same element paths) has no index entries of its own there;
searches read the other's (`phonetic` reads `name` on Patient, Person, Practitioner and
RelatedPerson, whose phonetic expression is their `name`; not on Organization, whose
`name` also reads `alias`). `aliases()` is the table, per type, that extraction and every
store adapter share (a query carries it: `SearchQuery.aliases`). References are left out:
compartment membership, reach and `_include` name them directly.

Table format (fhirpm/fhir/tables/search_parameters.json, made by `python -m
scripts.gen_tables`): a JSON list of objects with the keys of `SearchParamDef`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from fhirpm.search import fhirpath

# Parameters defined on Resource / DomainResource apply to every type.
COMMON_BASES = ("Resource", "DomainResource")
# Parameter types whose entries only searches read (see the module docstring).
_ALIASABLE = frozenset({"string", "token", "uri", "date", "number", "quantity"})


@dataclass(frozen=True, slots=True)
class Component:
    definition: str  # canonical URL of the component's SearchParameter
    expression: str  # FHIRPath relative to the composite's expression


@dataclass(frozen=True, slots=True)
class SearchParamDef:
    code: str
    type: str  # number|date|string|token|reference|composite|quantity|uri|special
    base: tuple[str, ...]
    expression: str | None
    url: str
    target: tuple[str, ...] = ()
    modifier: tuple[str, ...] = ()
    comparator: tuple[str, ...] = ()
    component: tuple[Component, ...] = ()
    chain: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SearchParamDef:
        return cls(
            code=obj["code"], type=obj["type"], base=tuple(obj["base"]),
            expression=obj.get("expression"), url=obj["url"],
            target=tuple(obj.get("target", ())), modifier=tuple(obj.get("modifier", ())),
            comparator=tuple(obj.get("comparator", ())),
            component=tuple(Component(c["definition"], c["expression"])
                            for c in obj.get("component", ())),
            chain=tuple(obj.get("chain", ())),
        )


@dataclass
class Registry:
    by_url: dict[str, SearchParamDef] = field(default_factory=dict)
    _by_type: dict[str, dict[str, SearchParamDef]] = field(default_factory=dict)
    revision: int = 0  # bumped on every change, so caches (compiled extractors) can notice
    _aliases: tuple[int, dict[str, dict[str, str]]] = (-1, {})  # (revision, aliases())

    def add(self, param: SearchParamDef) -> None:
        old = self.by_url.get(param.url)
        if old is not None:
            self.remove(old.url)
        self.by_url[param.url] = param
        self.revision += 1
        for base in param.base:
            self._by_type.setdefault(base, {})[param.code] = param

    def remove(self, url: str) -> None:
        param = self.by_url.pop(url, None)
        if param is None:
            return
        self.revision += 1
        for base in param.base:
            if self._by_type.get(base, {}).get(param.code) is param:
                del self._by_type[base][param.code]

    def for_type(self, type: str) -> dict[str, SearchParamDef]:
        """Every parameter searchable on `type`, common ones (`_id`, ...) included."""
        out: dict[str, SearchParamDef] = {}
        for base in (*COMMON_BASES, type):
            out.update(self._by_type.get(base, {}))
        return out

    def get(self, type: str, code: str) -> SearchParamDef | None:
        found = self._by_type.get(type, {}).get(code)
        if found is not None:
            return found
        for base in COMMON_BASES:
            found = self._by_type.get(base, {}).get(code)
            if found is not None:
                return found
        return None

    def aliases(self) -> dict[str, dict[str, str]]:
        """Type -> alias code -> the code whose index entries serve it (module docstring);
        rebuilt when the registry changes, else the same object."""
        revision, found = self._aliases
        if revision != self.revision:
            found = {type_: aliases for type_, params in self._by_type.items()
                     if type_ not in COMMON_BASES and (aliases := _aliases(params, type_))}
            self._aliases = (self.revision, found)
        return found

    @classmethod
    def load_default(cls) -> Registry:
        """A new registry holding the official R4 parameters (the table is read once)."""
        official = _official()
        return cls(dict(official.by_url), {t: dict(p) for t, p in official._by_type.items()},
                   official.revision)


@cache
def _official() -> Registry:
    """The official parameters, built once per process; copied, never handed out."""
    registry = Registry()
    table = resources.files("fhirpm.fhir").joinpath("tables/search_parameters.json")
    for obj in json.loads(table.read_bytes()):
        registry.add(SearchParamDef.from_json(obj))
    return registry


def _aliases(params: dict[str, SearchParamDef], type_: str) -> dict[str, str]:
    """A type's parameters that select the same -> the first of them by code."""
    first: dict[tuple[Any, ...], str] = {}
    out: dict[str, str] = {}
    for code in sorted(params):
        selection = _selection(params[code], type_)
        if selection is None:
            continue
        if selection in first:
            out[code] = first[selection]
        else:
            first[selection] = code
    return out


def _selection(param: SearchParamDef, type_: str) -> tuple[Any, ...] | None:
    """What a parameter selects on a type, when that is plain element paths."""
    if param.type not in _ALIASABLE or not param.expression:
        return None
    try:
        chains = fhirpath.member_chains(param.expression, type_)
    except fhirpath.FhirPathError:
        return None
    return (param.type, *sorted(chains)) if chains else None
