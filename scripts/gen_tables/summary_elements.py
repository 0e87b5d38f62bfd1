"""summary_elements.json: per resource type, the top-level JSON element names marked
isSummary (what `_summary=true` keeps) and those with min >= 1 (kept by `_elements` and
`_summary` whatever is asked). Choice elements are listed under every JSON name they take
(`deceased[x]` -> `deceasedBoolean`, `deceasedDateTime`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.gen_tables._defs import resource_definitions, write_table


def json_names(element: dict[str, Any], prefix_len: int) -> list[str]:
    name = element["path"][prefix_len:]
    if not name.endswith("[x]"):
        return [name]
    base = name[:-3]
    return [base + t["code"][0].upper() + t["code"][1:] for t in element.get("type", ())]


def generate(definitions: Path, out: Path) -> None:
    table: dict[str, dict[str, list[str]]] = {}
    for sd in resource_definitions(definitions):
        type_name = sd["type"]
        prefix = type_name + "."
        summary: list[str] = []
        mandatory: list[str] = []
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if not path.startswith(prefix) or "." in path[len(prefix):]:
                continue
            names = json_names(element, len(prefix))
            if element.get("isSummary"):
                summary.extend(names)
            if element.get("min", 0) >= 1:
                mandatory.extend(names)
        table[type_name] = {"summary": summary, "mandatory": mandatory}
    write_table(out, "summary_elements.json", table)
