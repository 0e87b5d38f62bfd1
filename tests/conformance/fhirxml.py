"""FHIR XML -> FHIR JSON, for test material published only in XML (the FHIRPath Patch cases).

Driven by the R4 core StructureDefinitions in ../shared/data/fhir/definitions: they say
which elements repeat (JSON arrays), which primitives are numbers or booleans, and what
type a choice element (`valueDate`) or a nested element has. Test-only: the server speaks
JSON. Narrative `div` becomes its XHTML text; primitive extensions become `_name`.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

FHIR_NS = "{http://hl7.org/fhir}"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_INTEGERS = ("integer", "positiveInt", "unsignedInt")
_COMPLEX_CONTAINERS = ("BackboneElement", "Element")

ET.register_namespace("", XHTML_NS)


class Definitions:
    def __init__(self, core: Path) -> None:
        self.core = core

    @cache  # noqa: B019 - one instance per test session
    def elements(self, type: str) -> dict[str, dict[str, Any]]:
        sd = json.loads((self.core / f"StructureDefinition-{type}.json").read_text())
        return {e["path"]: e for e in sd["snapshot"]["element"]}

    def child(self, owner: str, context: str, name: str) -> tuple[dict[str, Any], str]:
        """The definition of `name` under `context` (a path in `owner`'s definition), and
        the type code the element has (resolving choice elements like `valueDate`)."""
        elements = self.elements(owner)
        found = elements.get(f"{context}.{name}")
        if found is not None:
            types = found.get("type") or [{"code": "Element"}]
            return found, types[0]["code"]
        for path, element in elements.items():
            if path.startswith(f"{context}.") and path.endswith("[x]"):
                base = path[len(context) + 1:-3]
                if name.startswith(base) and len(name) > len(base):
                    suffix = name[len(base):]
                    for t in element.get("type", []):
                        if t["code"][0].upper() + t["code"][1:] == suffix:
                            return element, t["code"]
        raise KeyError(f"{context}.{name} is not defined in {owner}")


def _local(tag: str) -> str:
    return tag.split("}", 1)[1] if "}" in tag else tag


def to_json(root: ET.Element, definitions: Definitions) -> dict[str, Any]:
    """A FHIR XML resource element -> its JSON object."""
    type = _local(root.tag)
    out: dict[str, Any] = {"resourceType": type}
    _fill(out, root, definitions, type, type)
    return out


def _fill(out: dict[str, Any], node: ET.Element, defs: Definitions, owner: str,
          context: str) -> None:
    for child in node:
        if not isinstance(child.tag, str):
            continue  # comments
        name = _local(child.tag)
        if name == "div" and XHTML_NS in child.tag:
            out["div"] = ET.tostring(child, encoding="unicode").strip()
            continue
        element, code = defs.child(owner, context, name)
        repeats = element.get("max", "1") != "1"
        value, extra = _convert(child, defs, owner, element, code)
        _put(out, name, value, extra, repeats)


def _convert(child: ET.Element, defs: Definitions, owner: str, element: dict[str, Any],
             code: str) -> tuple[Any, dict[str, Any] | None]:
    """(the JSON value, the `_name` object for a primitive's id/extensions or None)."""
    if code[0].islower():  # a primitive
        extra: dict[str, Any] = {}
        if "id" in child.attrib:
            extra["id"] = child.attrib["id"]
        for ext in child:
            if isinstance(ext.tag, str) and _local(ext.tag) == "extension":
                extra.setdefault("extension", []).append(_complex(ext, defs, "Extension",
                                                                  "Extension"))
        raw = child.attrib.get("value")
        return (_primitive(raw, code) if raw is not None else None), (extra or None)
    if code == "Resource":
        inner = next(c for c in child if isinstance(c.tag, str))
        return to_json(inner, defs), None
    if code in _COMPLEX_CONTAINERS:
        target = element.get("contentReference", "#" + element["path"])[1:]
        return _complex(child, defs, owner, target), None
    return _complex(child, defs, code, code), None


def _complex(node: ET.Element, defs: Definitions, owner: str, context: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in ("id", "url"):
        if attr in node.attrib:
            out[attr] = node.attrib[attr]
    _fill(out, node, defs, owner, context)
    return out


def _primitive(raw: str, code: str) -> Any:
    if code == "boolean":
        return raw == "true"
    if code in _INTEGERS:
        return int(raw)
    if code == "decimal":
        return Decimal(raw)
    return raw


def _put(out: dict[str, Any], name: str, value: Any, extra: dict[str, Any] | None,
         repeats: bool) -> None:
    if not repeats:
        if value is not None:
            out[name] = value
        if extra is not None:
            out[f"_{name}"] = extra
        return
    values = out.setdefault(name, [])
    values.append(value)
    if extra is not None or f"_{name}" in out:
        extras = out.setdefault(f"_{name}", [None] * (len(values) - 1))
        extras.append(extra)
    if all(v is None for v in values):
        del out[name]
