"""Golden tests: every sample message mapped and compared field by field with
FHIR-Converter's expected output; every difference must be a listed divergence, and every
listed divergence must still be needed. Also: every mapped resource is valid R4."""

from __future__ import annotations

import pytest

from fhirpm.fhir import jsonio
from fhirpm.fhir.validation import FhirkitValidator
from fhirpm.hl7v2 import parser
from fhirpm.hl7v2.engine import Engine
from tests.conftest import shared_path
from tests.hl7v2.golden.compare import DIVERGENCES, compare_all


@pytest.fixture(scope="module")
def results():
    return compare_all(shared_path("hl7v2"))


def test_every_difference_is_a_listed_divergence(results) -> None:
    unexplained = [f"{c.file} {c.type}.{c.path}: ours {sorted(c.ours)} theirs "
                   f"{sorted(c.theirs)}" for c in results if not c.agrees and not c.divergence()]
    assert not unexplained, "\n".join(unexplained)


def test_every_listed_divergence_is_still_needed(results) -> None:
    used = {id(c.divergence()) for c in results if not c.agrees}
    stale = [d["reason"][:60] for d in DIVERGENCES if id(d) not in used]
    assert not stale, stale


def test_agreement_covers_every_compared_type(results) -> None:
    agreed = {c.type for c in results if c.agrees}
    assert agreed == {"Patient", "Encounter", "Coverage", "Appointment", "ChargeItem"}
    share = sum(c.agrees for c in results) / len(results)
    print(f"\ngolden agreement: {sum(c.agrees for c in results)}/{len(results)} "
          f"field comparisons ({share:.0%}); the rest are listed divergences")
    assert share > 0.8


def test_every_sample_maps_to_valid_resources() -> None:
    engine, validator = Engine(), FhirkitValidator()
    problems = []
    for path in sorted(shared_path("hl7v2").glob("*.hl7")):
        for res in engine.map(parser.parse(path.read_bytes())).resources:
            body = res.resource()
            body.setdefault("id", "x")
            if res.type == "Provenance":
                body["recorded"] = "2024-01-01T00:00:00Z"
            issues = validator.validate(body, jsonio.dumps(body))
            problems += [f"{path.name} {res.key}: {i.diagnostics}" for i in issues
                         if i.severity in ("error", "fatal")]
    assert not problems, "\n".join(problems[:30])
