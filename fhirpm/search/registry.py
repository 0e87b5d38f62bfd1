"""The search-parameter registry: the official R4 definitions (from a generated table) plus
custom SearchParameter resources created through the API.

Table format (fhirpm/fhir/tables/search_parameters.json, made by `python -m
scripts.gen_tables`): a JSON list of objects with the keys of `SearchParamDef`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

# Parameters defined on Resource / DomainResource apply to every type.
COMMON_BASES = ("Resource", "DomainResource")


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
