"""The compiled extractors select exactly what fhirpathpy (a general FHIRPath engine, used
here as the oracle) selects, parameter by parameter, over Synthea and the R4 examples.

fhirpathpy has no `resolve()` and does not match `Resource.` against a concrete type, so
the oracle's copy of an expression reads `X.where(resolve() is T)` as references whose text
names a T, and `Resource.x` as `<Type>.x`. The sample is deterministic (the first resources
of each type); `python -m bench.extraction` covers every Synthea resource for speed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from typing import Any

import pytest

from fhirpm.fhir import jsonio
from fhirpm.search import fhirpath
from fhirpm.search.registry import Registry
from tests.conftest import shared_path

fhirpathpy = pytest.importorskip("fhirpathpy")
from fhirpathpy.models import models  # noqa: E402

PER_TYPE = 8
_RESOLVE = re.compile(r"\.where\(resolve\(\) is (\w+)\)")


def _rewrite_references(node: Any, targets: dict[str, str]) -> None:
    """Point urn:uuid references at `Type/id`, as the server stores them."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in targets:
            node["reference"] = targets[ref]
        for value in node.values():
            _rewrite_references(value, targets)
    elif isinstance(node, list):
        for value in node:
            _rewrite_references(value, targets)


def sample() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    for path in sorted(shared_path("fhir", "synthea").glob("*.json")):
        bundle = jsonio.loads(path.read_bytes())
        targets = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
                   for e in bundle["entry"] if "fullUrl" in e and "id" in e["resource"]}
        _rewrite_references(bundle, targets)
        for entry in bundle["entry"]:
            kind = entry["resource"]["resourceType"]
            seen[kind] += 1
            if seen[kind] <= PER_TYPE:
                out.append(entry["resource"])
    for path in sorted(shared_path("fhir", "r4-examples").glob("*.json")):
        if path.name != "package.json":
            resource = jsonio.loads(path.read_bytes())
            out.append(resource)
            out.extend(e["resource"] for e in resource.get("entry", ()) if "resource" in e)
    return out


def oracle_expression(expression: str, type_name: str) -> str:
    text = re.sub(r"\bResource\.", f"{type_name}.", expression)
    return _RESOLVE.sub(lambda m: f".where(reference.startsWith('{m[1]}/') or "
                                  f"reference.contains('/{m[1]}/'))", text)


@cache
def oracle(expression: str) -> Any:
    return fhirpathpy.compile(expression, models["r4"])


def canonical(values: list[Any]) -> set[str]:
    return {json.dumps(v) if isinstance(v, str | bool) else jsonio.dumps(v, sort_keys=True)
            .decode() for v in values}


def test_compiled_extractors_agree_with_fhirpathpy():
    registry = Registry.load_default()
    resources = sample()
    checked = 0
    mismatches: dict[str, tuple[set[str], set[str]]] = {}
    for resource in resources:
        kind = resource["resourceType"]
        for code, param in registry.for_type(kind).items():
            if not param.expression or param.type in ("composite", "special"):
                continue
            compiled = fhirpath.compile(param.expression, kind)
            mine = compiled(resource)
            theirs = oracle(oracle_expression(param.expression, kind))(resource)
            checked += 1
            keys = compiled.root_keys  # the indexer skips the expression without these
            if keys is not None and not any(k in resource for k in keys):
                mine = []
            if canonical(mine) != canonical(theirs):
                mismatches[f"{kind}/{resource.get('id')} {code}"] = (
                    canonical(mine), canonical(theirs))
    assert mismatches == {}
    assert len(resources) > 150 and checked > 3000
