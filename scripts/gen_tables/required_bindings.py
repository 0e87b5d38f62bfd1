"""required_bindings.json: the codes allowed wherever R4 binds an element with strength
`required`, for validating writes (`fhirpm.fhir.bindings`).

The table is a graph, not a flat path list, because datatypes are shared and recursive
(Identifier.assigner -> Reference.identifier -> Identifier): it holds

- `valuesets`: value-set id -> {code system url: sorted codes}, expanded here from the core
  package's ValueSets and CodeSystems (whole code systems, concept lists, nested value sets);
- `urls`: value-set id -> its canonical URL (for messages);
- `nodes`: a resource type, datatype or backbone element (`Patient.contact`) -> {JSON element
  name -> a value-set id, `@<node>` to descend into, or `@*` for a nested resource (contained,
  Bundle.entry.resource) checked by its own resourceType}. Only elements that lead to a
  required binding are listed; choice elements appear under each JSON name (`valueQuantity`);
- `skipped`: value sets that cannot be expanded from the package (UCUM, MIME types,
  currencies, ...) -> why, with the elements left unchecked because of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.gen_tables._defs import package_files, write_table

_SKIP_ELEMENTS = {"id", "extension", "modifierExtension"}
_PRIMITIVE_CODED = {"code", "Coding", "CodeableConcept", "string", "uri", "canonical"}
_NOT_DESCENDED = {"Extension", "Element", "BackboneElement", "Resource", "xhtml"}


class Unexpandable(Exception):
    pass


class Terminology:
    """Expands value sets from the core package's ValueSets and CodeSystems."""

    def __init__(self, definitions: Path) -> None:
        self.valuesets = {vs["url"]: vs for vs in package_files(definitions, "ValueSet")}
        self.codesystems = {cs["url"]: cs for cs in package_files(definitions, "CodeSystem")}

    def expand(self, url: str) -> dict[str, set[str]]:
        vs = self.valuesets.get(url)
        if vs is None:
            raise Unexpandable(f"value set {url} is not in the core package")
        compose = vs.get("compose")
        if compose is None:
            raise Unexpandable(f"value set {url} has no compose")
        codes: dict[str, set[str]] = {}
        for include in compose.get("include", ()):
            for system, found in self._include(include).items():
                codes.setdefault(system, set()).update(found)
        for exclude in compose.get("exclude", ()):
            for system, found in self._include(exclude).items():
                codes.get(system, set()).difference_update(found)
        return codes

    def _include(self, include: dict[str, Any]) -> dict[str, set[str]]:
        if include.get("filter"):
            raise Unexpandable(f"filters {include['filter']} are not expanded")
        if include.get("valueSet"):
            if include.get("system") or len(include["valueSet"]) > 1:
                raise Unexpandable("intersections of value sets are not expanded")
            return self.expand(include["valueSet"][0].split("|")[0])
        system = include["system"]
        if include.get("concept"):
            return {system: {c["code"] for c in include["concept"]}}
        cs = self.codesystems.get(system)
        if cs is None:
            raise Unexpandable(f"code system {system} is not in the core package")
        if cs.get("content") != "complete":
            raise Unexpandable(f"code system {system} is {cs.get('content')}")
        return {system: set(_all_codes(cs.get("concept", ())))}


def _all_codes(concepts: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for concept in concepts:
        out.append(concept["code"])
        out.extend(_all_codes(concept.get("concept", ())))
    return out


def _json_names(name: str, types: list[str]) -> list[tuple[str, str]]:
    if not name.endswith("[x]"):
        return [(name, t) for t in types]
    base = name[:-3]
    return [(base + t[0].upper() + t[1:], t) for t in types]


def _type_codes(element: dict[str, Any]) -> list[str]:
    codes = []
    for t in element.get("type", ()):
        code = t["code"]
        codes.append("string" if code.startswith("http://hl7.org/fhirpath/") else code)
    return codes


class Graph:
    """Element graph of resources, datatypes and backbone elements, before pruning."""

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self.edges: dict[str, dict[str, str]] = {}  # node -> json name -> "@node" | vs id
        self.valuesets: dict[str, dict[str, list[str]]] = {}
        self.urls: dict[str, str] = {}
        self.skipped: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}  # constrained datatypes (SimpleQuantity) -> base

    def add_alias(self, sd: dict[str, Any]) -> None:
        name = sd["url"].rsplit("/", 1)[-1]
        if name != sd["type"] and name.isalnum():
            self.aliases[name] = sd["type"]

    def add_structure(self, sd: dict[str, Any]) -> None:
        root = sd["type"]
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if "." not in path:
                self.edges.setdefault(root, {})
                continue
            parent, name = path.rsplit(".", 1)
            if name in _SKIP_ELEMENTS:
                continue
            node = self.edges.setdefault(parent, {})
            self._add_element(node, path, name, element)

    def _add_element(self, node: dict[str, str], path: str, name: str,
                     element: dict[str, Any]) -> None:
        if element.get("contentReference"):
            node[name] = "@" + element["contentReference"].lstrip("#")
            return
        types = _type_codes(element)
        binding = element.get("binding") or {}
        vs_id = None
        if binding.get("strength") == "required" and binding.get("valueSet"):
            vs_id = self._valueset(binding["valueSet"].split("|")[0], path)
        for json_name, type_code in _json_names(name, types):
            type_code = self.aliases.get(type_code, type_code)
            if type_code in ("BackboneElement", "Element") and not name.endswith("[x]"):
                node[json_name] = "@" + path
            elif type_code == "Resource":
                node[json_name] = "@*"
            elif vs_id and type_code in _PRIMITIVE_CODED:
                node[json_name] = vs_id
            elif type_code[0].isupper() and type_code not in _NOT_DESCENDED:
                node[json_name] = "@" + type_code

    def _valueset(self, url: str, path: str) -> str | None:
        vs_id = url.rsplit("/", 1)[-1]
        if vs_id in self.skipped:
            self.skipped[vs_id]["elements"].append(path)
            return None
        if vs_id not in self.valuesets:
            try:
                expanded = self.terminology.expand(url)
            except Unexpandable as exc:
                self.skipped[vs_id] = {"url": url, "reason": str(exc), "elements": [path]}
                return None
            self.valuesets[vs_id] = {s: sorted(c) for s, c in sorted(expanded.items()) if c}
            self.urls[vs_id] = url
        return vs_id

    def pruned(self) -> dict[str, dict[str, str]]:
        """Keep only the edges that can reach a value set (fixpoint over the graph)."""
        useful: set[str] = set()
        changed = True
        while changed:
            changed = False
            for node, edges in self.edges.items():
                if node in useful:
                    continue
                if any(not t.startswith("@") or t == "@*" or t[1:] in useful
                       for t in edges.values()):
                    useful.add(node)
                    changed = True
        out: dict[str, dict[str, str]] = {}
        for node in useful:
            kept = {k: t for k, t in self.edges[node].items()
                    if not t.startswith("@") or t == "@*" or t[1:] in useful}
            out[node] = kept
        return out


def generate(definitions: Path, out: Path) -> None:
    graph = Graph(Terminology(definitions))
    structures = list(package_files(definitions, "StructureDefinition"))
    for sd in structures:
        if sd.get("kind") == "complex-type" and sd.get("derivation") == "constraint":
            graph.add_alias(sd)
    for sd in structures:
        if sd.get("derivation") != "specialization" or sd.get("kind") not in (
                "resource", "complex-type") or sd["type"] in _NOT_DESCENDED:
            continue
        graph.add_structure(sd)
    for skipped in graph.skipped.values():
        skipped["elements"].sort()
    table = {
        "comment": "HL7 FHIR R4 4.0.1 required bindings (CC0); see fhirpm/fhir/tables/README.md",
        "valuesets": graph.valuesets,
        "urls": graph.urls,
        "nodes": graph.pruned(),
        "skipped": graph.skipped,
    }
    write_table(out, "required_bindings.json", table)
