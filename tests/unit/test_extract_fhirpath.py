"""The FHIRPath subset compiler used by write-time extraction (`search.fhirpath`)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhirpm.search import fhirpath
from fhirpm.search.extract import compile_coverage
from fhirpm.search.registry import Registry

OBS = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Weight"},
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": Decimal("72.50"), "unit": "kg"},
    "component": [{"code": {"text": "a"}, "valueString": "x"},
                  {"code": {"text": "b"}, "valueQuantity": {"value": 3}}],
}


def run(expression: str, resource: dict, root_type: str | None = None) -> list:
    return fhirpath.compile(expression, root_type)(resource)


def test_every_official_expression_compiles():
    compiled, failed = compile_coverage(Registry.load_default())
    assert failed == {}
    assert compiled > 1500


def test_paths_unions_and_type_roots():
    assert run("Observation.status", OBS) == ["final"]
    assert run("Observation.code.coding.code | Observation.status", OBS) == ["29463-7", "final"]
    assert run("Patient.name", OBS) == []
    assert run("Resource.id", OBS) == ["o1"]
    assert run("component.code.text", OBS) == ["a", "b"]


def test_specialising_to_a_type_drops_other_branches():
    expr = "AllergyIntolerance.code | Observation.code | Condition.code"
    assert run(expr, OBS, "Observation") == [OBS["code"]]
    assert fhirpath.compile(expr, "Patient").never_matches
    assert not fhirpath.compile(expr, "Condition").never_matches


def test_choice_elements_resolve_to_their_json_names():
    assert run("Observation.value", OBS) == [OBS["valueQuantity"]]
    assert run("Observation.value.as(Quantity)", OBS) == [OBS["valueQuantity"]]
    assert run("(Observation.value as Quantity).unit", OBS) == ["kg"]
    assert run("(Observation.value as CodeableConcept)", OBS) == []
    assert run("Observation.value.ofType(Quantity)", OBS) == [OBS["valueQuantity"]]
    assert run("Observation.component.value.as(string)", OBS) == ["x"]
    assert run("Observation.value is Quantity", OBS) == [True]
    assert run("Observation.value is Period", OBS) == [False]


def test_relative_expressions_see_the_resource_as_percent_resource():
    component = OBS["component"][1]
    expr = fhirpath.compile("value.as(Quantity).value")
    assert expr(component, OBS) == [3]
    assert fhirpath.compile("%resource.status")(component, OBS) == ["final"]


@pytest.mark.parametrize(("reference", "expected"), [
    ({"reference": "Patient/p1"}, True),
    ({"reference": "http://other.org/fhir/Patient/p1/_history/2"}, True),
    ({"reference": "Group/g1"}, False),
    ({"reference": "#pat"}, True),
    ({"reference": "#grp"}, False),
    ({"type": "Patient", "identifier": {"value": "123"}}, True),
    ({"reference": "urn:uuid:0f8c"}, False),
])
def test_where_resolve_is_reads_the_reference_target_type(reference, expected):
    obs = {"resourceType": "Observation", "subject": reference,
           "contained": [{"resourceType": "Patient", "id": "pat"},
                         {"resourceType": "Group", "id": "grp"}]}
    found = run("Observation.subject.where(resolve() is Patient)", obs)
    assert found == ([reference] if expected else [])


def test_where_with_equality_and_extensions():
    resource = {"resourceType": "Patient",
                "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a"}],
                "extension": [{"url": "http://x/a", "valueString": "A"},
                              {"url": "http://x/b", "valueString": "B"}]}
    assert run("Patient.telecom.where(system='email').value", resource) == ["a"]
    assert run("Patient.telecom.where(system!='email').value", resource) == ["1"]
    assert run("Patient.extension('http://x/b').value", resource) == ["B"]
    assert run("Patient.telecom.first().value", resource) == ["1"]
    assert run("Patient.telecom.last().value", resource) == ["a"]
    assert run("Patient.telecom.count()", resource) == [2]
    assert run("Patient.telecom[1].system", resource) == ["email"]


@pytest.mark.parametrize(("deceased", "expected"), [
    ({}, [False]),
    ({"deceasedBoolean": False}, [False]),
    ({"deceasedBoolean": True}, [True]),
    ({"deceasedDateTime": "2020-01-01"}, [True]),
])
def test_three_valued_logic(deceased, expected):
    patient = {"resourceType": "Patient", **deceased}
    expr = "Patient.deceased.exists() and Patient.deceased != false"
    assert run(expr, patient) == expected


def test_logic_tables():
    for expr, expected in [("true and {}", []), ("false and {}", [False]), ("true or {}", [True]),
                           ("{} or false", []), ("true xor false", [True]),
                           ("false implies {}", [True]), ("{} implies true", [True]),
                           ("1 = 1.0", [True]), ("'a' = 'a'", [True]), ("1 = true", [False]),
                           ("'a' ~ 'A'", [True]), ("2 > 1", [True]), ("{} = 1", []),
                           ("'b' in ('a' | 'b')", [True]), ("(1 | 2) contains 3", [False]),
                           ("{}.empty()", [True]), ("true.not()", [False])]:
        assert run(expr, {}) == expected, expr


def test_unsupported_or_malformed_expressions_fail_at_compile_time():
    for bad in ("Patient.name.descendants()", "1 + 2", "Patient.name.where(", "Patient..x",
                "Patient.gender as Unknowntype", "%weird", "Patient.name.where()"):
        with pytest.raises(fhirpath.FhirPathError):
            fhirpath.compile(bad)


def test_member_chains():
    chains = fhirpath.member_chains("Patient.contact.gender | Person.gender | name", "Patient")
    assert chains == [("contact", "gender"), ("name",)]
    assert fhirpath.member_chains("Patient.telecom.where(system='phone')", "Patient") is None
    assert fhirpath.member_chains("Resource.id", "Patient") == [("id",)]


def test_compiled_once():
    assert fhirpath.compile("Patient.name", "Patient") is fhirpath.compile("Patient.name",
                                                                           "Patient")
