"""The generated definition tables: present, small, consistent, and up to date with the
generators (regenerated from ../shared when it is there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.search.registry import Registry, SearchParamDef
from tests.conftest import shared_path

TABLES = Path(__file__).resolve().parents[2] / "fhirpm" / "fhir" / "tables"
NAMES = ("search_parameters.json", "required_bindings.json", "compartments.json",
         "summary_elements.json", "choice_elements.json")


def table(name: str):
    return json.loads((TABLES / name).read_bytes())


def test_tables_are_small_and_documented():
    total = sum((TABLES / n).stat().st_size for n in NAMES)
    assert total < 1_500_000
    readme = (TABLES / "README.md").read_text()
    assert "CC0" in readme and "4.0.1" in readme


def test_every_search_parameter_loads_into_the_registry():
    rows = table("search_parameters.json")
    defs = [SearchParamDef.from_json(r) for r in rows]
    assert all(d.expression for d in defs)
    registry = Registry.load_default()
    assert registry.get("Patient", "birthdate").type == "date"
    assert registry.get("Patient", "_id").expression == "Resource.id"
    assert registry.get("Observation", "_lastUpdated").type == "date"
    assert set(registry.get("Observation", "subject").target) >= {"Patient", "Group"}
    composite = registry.get("Observation", "code-value-quantity")
    assert [c.expression for c in composite.component] == ["code", "value.as(Quantity)"]


def test_search_parameters_cover_the_official_bundle():
    bundle = json.loads(shared_path("fhir", "definitions", "search-parameters.json").read_bytes())
    official = {e["resource"]["url"] for e in bundle["entry"] if e["resource"].get("expression")}
    assert {r["url"] for r in table("search_parameters.json")} == official


def test_required_binding_graph_is_closed():
    t = table("required_bindings.json")
    nodes, valuesets = t["nodes"], t["valuesets"]
    for node, edges in nodes.items():
        for name, target in edges.items():
            if target == "@*":
                continue
            if target.startswith("@"):
                assert target[1:] in nodes, (node, name, target)
            else:
                assert target in valuesets, (node, name, target)
    assert valuesets["administrative-gender"] == {
        "http://hl7.org/fhir/administrative-gender": ["female", "male", "other", "unknown"]}
    assert nodes["Patient"]["gender"] == "administrative-gender"
    assert "ucum-units" in t["skipped"] and "mimetypes" in t["skipped"]
    assert set(t["urls"]) == set(valuesets)


def test_choice_elements():
    choices = table("choice_elements.json")
    assert {"Quantity", "CodeableConcept", "String", "DateTime"} <= set(choices["value"])
    assert {"Boolean", "DateTime"} <= set(choices["deceased"])
    assert "given" not in choices and "status" not in choices


def test_compartments_and_summaries():
    compartments = table("compartments.json")
    assert set(compartments) == {"Patient", "Encounter", "RelatedPerson", "Practitioner",
                                 "Device"}
    assert "subject" in compartments["Patient"]["Observation"]
    assert "actor" in compartments["Patient"]["Appointment"]
    summary = table("summary_elements.json")
    assert set(summary) == set(RESOURCE_TYPES)
    assert {"name", "birthDate", "deceasedBoolean"} <= set(summary["Patient"]["summary"])
    assert "photo" not in summary["Patient"]["summary"]
    assert summary["Observation"]["mandatory"] == ["status", "code"]


def test_committed_tables_match_the_generators(tmp_path, monkeypatch):
    definitions = shared_path("fhir", "definitions")
    from scripts.gen_tables import __main__ as gen

    monkeypatch.setattr(gen, "OUT", tmp_path)
    assert gen.main([str(definitions)]) == 0
    stale = [n for n in NAMES if (tmp_path / n).read_bytes() != (TABLES / n).read_bytes()]
    assert not stale, f"regenerate with `python -m scripts.gen_tables`: {stale}"


@pytest.mark.parametrize("name", NAMES)
def test_tables_are_minified(name):
    assert b"\n " not in (TABLES / name).read_bytes()
