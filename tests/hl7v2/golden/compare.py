"""Field-by-field comparison of our mapping with FHIR-Converter's expected bundles.

`python -m tests.hl7v2.golden.compare` prints the agreement figures and every difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from fhirpm.hl7v2 import parser
from fhirpm.hl7v2.engine import Engine

HERE = Path(__file__).parent
FIELDS: dict[str, list[str]] = yaml.safe_load((HERE / "fields.yaml").read_text())
DIVERGENCES: list[dict[str, str]] = yaml.safe_load((HERE / "divergences.yaml").read_text())


@dataclass(frozen=True)
class Comparison:
    file: str
    type: str
    path: str
    ours: frozenset[str]
    theirs: frozenset[str]

    @property
    def agrees(self) -> bool:
        return self.ours == self.theirs

    def divergence(self) -> dict[str, str] | None:
        for d in DIVERGENCES:
            if (fnmatch(self.file, d["files"]) and d["type"] == self.type
                    and d["path"] in (self.path, "*")):
                return d
        return None


def values(resources: list[dict[str, Any]], path: str) -> frozenset[str]:
    found: set[str] = set()
    for res in resources:
        _collect(res, path.split("."), found)
    return frozenset(found)


def _collect(value: Any, steps: list[str], out: set[str]) -> None:
    if isinstance(value, list):
        for v in value:
            _collect(v, steps, out)
        return
    if not steps:
        if value is not None and not isinstance(value, dict):
            out.add(normalise(value))
        return
    if isinstance(value, dict):
        _collect(value.get(steps[0]), steps[1:], out)


def normalise(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | Decimal):
        return str(Decimal(str(value)).normalize())
    text = str(value).strip()
    if len(text) > 10 and text[4:5] == "-" and "T" in text:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(
                UTC).isoformat()
        except ValueError:
            return text
    return text


def compare_file(engine: Engine, message: Path, expected: Path) -> list[Comparison]:
    mapped = engine.map(parser.parse(message.read_bytes()))
    ours: dict[str, list[dict[str, Any]]] = {}
    for res in mapped.resources:
        ours.setdefault(res.type, []).append(res.resource())
    theirs: dict[str, list[dict[str, Any]]] = {}
    for entry in json.loads(expected.read_text())["entry"]:
        res = entry["resource"]
        theirs.setdefault(res["resourceType"], []).append(res)
    out = []
    for type, paths in FIELDS.items():
        for path in paths:
            a, b = values(ours.get(type, []), path), values(theirs.get(type, []), path)
            if a or b:
                out.append(Comparison(message.name, type, path, a, b))
    return out


def compare_all(data: Path) -> list[Comparison]:
    engine = Engine()
    out: list[Comparison] = []
    for message in sorted(data.glob("*.hl7")):
        expected = data / "expected" / message.name.replace(".hl7", ".expected.json")
        if expected.exists():
            out.extend(compare_file(engine, message, expected))
    return out


def main() -> None:
    import os

    shared = Path(os.environ.get("FHIRPM_SHARED_DATA", HERE.parents[3] / "shared" / "data"))
    results = compare_all(shared / "hl7v2")
    agree = sum(c.agrees for c in results)
    listed = sum(1 for c in results if not c.agrees and c.divergence())
    print(f"{len(results)} field comparisons: {agree} agree, {listed} listed divergences, "
          f"{len(results) - agree - listed} unexplained")
    for c in results:
        if not c.agrees:
            d = c.divergence()
            mark = f"[listed: {d['reason'][:50]}]" if d else "[UNEXPLAINED]"
            print(f"{c.file} {c.type}.{c.path} {mark}\n   ours:   {sorted(c.ours)[:6]}\n"
                  f"   theirs: {sorted(c.theirs)[:6]}")


if __name__ == "__main__":
    main()
