"""compartments.json: for each compartment (Patient, Encounter, RelatedPerson, Practitioner,
Device), resource type -> the search parameter codes that link a resource to it. Types that
can never be in the compartment are left out. A param `{def}` (as in the spec) means the
compartment's own resource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.gen_tables._defs import load, package_files, write_table


def _definitions(definitions: Path) -> list[dict[str, Any]]:
    folder = definitions / "compartments"
    if folder.is_dir():
        return [load(p) for p in sorted(folder.glob("CompartmentDefinition-*.json"))]
    return [cd for cd in package_files(definitions, "CompartmentDefinition")
            if cd.get("id") != "example"]


def generate(definitions: Path, out: Path) -> None:
    table: dict[str, dict[str, list[str]]] = {}
    for cd in _definitions(definitions):
        members = {r["code"]: r["param"] for r in cd.get("resource", ()) if r.get("param")}
        table[cd["code"]] = members
    write_table(out, "compartments.json", table)
