"""Shared reading and writing helpers for the table generators (not a generator itself)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE = "hl7.fhir.r4.core"


def load(path: Path) -> Any:
    with path.open("rb") as f:
        return json.load(f)


def package_files(definitions: Path, kind: str) -> Iterator[dict[str, Any]]:
    """Every `<kind>-*.json` artifact of the core package, in file-name order."""
    for path in sorted((definitions / PACKAGE).glob(f"{kind}-*.json")):
        yield load(path)


def resource_definitions(definitions: Path) -> list[dict[str, Any]]:
    """The StructureDefinitions of the concrete resource types (no profiles, no abstracts)."""
    return [
        sd for sd in package_files(definitions, "StructureDefinition")
        if sd.get("kind") == "resource" and sd.get("derivation") == "specialization"
        and not sd.get("abstract")
    ]


def datatype_definitions(definitions: Path) -> dict[str, dict[str, Any]]:
    """Complex datatypes by name (HumanName, Quantity, ...), base definitions only."""
    return {
        sd["type"]: sd for sd in package_files(definitions, "StructureDefinition")
        if sd.get("kind") == "complex-type" and sd.get("derivation") == "specialization"
    }


def write_table(out: Path, name: str, table: Any) -> None:
    """Minified, key-sorted JSON so regenerating gives byte-identical files."""
    text = json.dumps(table, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    (out / name).write_text(text + "\n", encoding="utf-8")
