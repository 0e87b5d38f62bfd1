"""search_parameters.json: every official R4 SearchParameter that has an expression, as
compact objects with the keys of `fhirpm.search.registry.SearchParamDef` (no descriptions,
no XPath). `_text`, `_content` and `_query` have no expression and are left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.gen_tables._defs import load, write_table

BUNDLE = "search-parameters.json"
_LISTS = ("target", "modifier", "comparator", "chain")


def compact(sp: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"code": sp["code"], "type": sp["type"], "base": sp["base"],
                           "expression": sp["expression"], "url": sp["url"]}
    for key in _LISTS:
        if sp.get(key):
            out[key] = sorted(sp[key])
    if sp.get("component"):
        out["component"] = [{"definition": c["definition"], "expression": c["expression"]}
                            for c in sp["component"]]
    return out


def generate(definitions: Path, out: Path) -> None:
    bundle = load(definitions / BUNDLE)
    params = [compact(e["resource"]) for e in bundle["entry"]
              if e["resource"].get("resourceType") == "SearchParameter"
              and e["resource"].get("expression")]
    params.sort(key=lambda p: p["url"])
    write_table(out, "search_parameters.json", params)
