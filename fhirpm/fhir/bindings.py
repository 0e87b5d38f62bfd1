"""Required value-set bindings: every coded element R4 binds with strength `required` must
hold a code of that value set (`Patient.gender` is one of male | female | other | unknown).

The codes come from the generated table `tables/required_bindings.json` (a graph of
resources, datatypes and backbone elements; see its generator). The walk follows only the
elements of that graph, so a resource costs a handful of dict lookups. Rules:

- a `code` (or string/uri) value must be one of the value set's codes;
- a Coding whose system is one of the value set's systems must carry one of its codes; a
  Coding of another system is wrong, one without a system is checked by code alone;
- a CodeableConcept with codings needs one coding from the value set; one with text only
  passes (lenient: it says nothing coded).

Value sets that cannot be expanded from the core package (UCUM, MIME types, languages,
currencies) are not checked (listed in the table's `skipped`). Problems are returned as
`Issue`s with code `code-invalid` and FHIRPath-like locations (`Patient.name[0].use`).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from fhirpm.errors import Issue

_LIST_LIMIT = 12  # list the allowed codes in the message when there are this few

# Where the walk is: the root's name, or (parent, element name, list index or None).
# Made into text only for a problem: formatting it at every element visited cost more
# than the checks (almost every resource has none).
Path = str | tuple[Any, str, int | None]


def _path_text(path: Path) -> str:
    """`Patient.name[0].use` for ((`Patient`, `name`, 0), `use`, None)."""
    if isinstance(path, str):
        return path
    parent, key, n = path
    text = f"{_path_text(parent)}.{key}"
    return text if n is None else f"{text}[{n}]"


class BindingChecker:
    def __init__(self, table: dict[str, Any]) -> None:
        self.nodes: dict[str, dict[str, str]] = table["nodes"]
        self.urls: dict[str, str] = table["urls"]
        self.systems: dict[str, dict[str, frozenset[str]]] = {
            vs: {system: frozenset(codes) for system, codes in by_system.items()}
            for vs, by_system in table["valuesets"].items()
        }
        self.codes: dict[str, frozenset[str]] = {
            vs: frozenset().union(*by_system.values()) for vs, by_system in self.systems.items()
        }

    @classmethod
    @cache
    def load_default(cls) -> BindingChecker:
        table = resources.files("fhirpm.fhir").joinpath("tables/required_bindings.json")
        return cls(json.loads(table.read_bytes()))

    def code_system(self, type: str, names: tuple[str, ...]) -> str | None:
        """The one code system a required binding implies for the element `type.names`
        (`Patient.gender` -> http://hl7.org/fhir/administrative-gender), else None."""
        node = type
        for name in names[:-1]:
            target = self.nodes.get(node, {}).get(name)
            if target is None or not target.startswith("@") or target == "@*":
                return None
            node = target[1:]
        vs = self.nodes.get(node, {}).get(names[-1]) if names else None
        if vs is None or vs.startswith("@"):
            return None
        systems = self.systems[vs]
        return next(iter(systems)) if len(systems) == 1 else None

    def check(self, resource: dict[str, Any], path: str | None = None) -> list[Issue]:
        """Every required-binding violation in `resource` (and the resources it nests)."""
        issues: list[Issue] = []
        kind = resource.get("resourceType")
        if isinstance(kind, str):
            self._walk(resource, kind, path or kind, issues)
        return issues

    def _walk(self, obj: dict[str, Any], node_name: str, path: Path,
              issues: list[Issue]) -> None:
        node = self.nodes.get(node_name)
        if node is None:
            return
        for key, target in node.items():
            value = obj.get(key)
            if value is None:
                continue
            if type(value) is list:
                for n, item in enumerate(value):
                    self._element(item, target, (path, key, n), issues)
            else:
                self._element(value, target, (path, key, None), issues)

    def _element(self, value: Any, target: str, path: Path, issues: list[Issue]) -> None:
        if target[0] != "@":
            self._coded(value, target, path, issues)
        elif type(value) is not dict:
            return
        elif target == "@*":
            kind = value.get("resourceType")
            if isinstance(kind, str):
                self._walk(value, kind, path, issues)
        else:
            self._walk(value, target[1:], path, issues)

    def _coded(self, value: Any, vs: str, path: Path, issues: list[Issue]) -> None:
        if isinstance(value, str):
            if value not in self.codes[vs]:
                issues.append(self._issue(path, value, vs))
        elif type(value) is dict:
            codings = value.get("coding")
            if type(codings) is list:
                self._concept(codings, vs, path, issues)
            elif "code" in value or "system" in value:
                problem = self._coding_problem(value, vs)
                if problem is not None:
                    issues.append(self._issue(path, problem, vs))

    def _concept(self, codings: list[Any], vs: str, path: Path, issues: list[Issue]) -> None:
        problems = [self._coding_problem(c, vs) for c in codings if type(c) is dict]
        if problems and all(p is not None for p in problems):
            issues.append(self._issue(path, ", ".join(p for p in problems if p), vs))

    def _coding_problem(self, coding: dict[str, Any], vs: str) -> str | None:
        """None when the Coding is in the value set, else how to show it in the message."""
        code, system = coding.get("code"), coding.get("system")
        if not isinstance(code, str):
            return f"{system}|(no code)"
        if system is None:
            return None if code in self.codes[vs] else code
        allowed = self.systems[vs].get(system)
        return None if allowed is not None and code in allowed else f"{system}|{code}"

    def _issue(self, at: Path, shown: str, vs: str) -> Issue:
        path = _path_text(at)
        allowed = sorted(self.codes[vs])
        hint = f" (one of {', '.join(allowed)})" if len(allowed) <= _LIST_LIMIT else ""
        return Issue("code-invalid",
                     f"{path}: {shown!r} is not in the required value set "
                     f"{self.urls[vs]}{hint}",
                     expression=(path,))
