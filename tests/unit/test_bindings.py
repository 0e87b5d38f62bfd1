"""Required value-set bindings: bad codes are rejected with their path, valid data passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirpm.fhir import jsonio
from fhirpm.fhir.bindings import BindingChecker
from fhirpm.fhir.validation import FhirkitValidator
from tests.conftest import FHIR_JSON, shared_path

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


@pytest.fixture(scope="module")
def checker() -> BindingChecker:
    return BindingChecker.load_default()


def paths(issues) -> list[str]:
    return [e for i in issues for e in i.expression]


def test_unknown_gender_is_rejected_at_its_path(checker):
    issues = checker.check({"resourceType": "Patient", "gender": "robot"})
    assert paths(issues) == ["Patient.gender"]
    assert issues[0].code == "code-invalid" and issues[0].severity == "error"
    assert "administrative-gender" in issues[0].diagnostics
    assert checker.check({"resourceType": "Patient", "gender": "female"}) == []


def test_datatypes_lists_and_nested_resources_are_walked(checker):
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "official"}, {"use": "nickname-ish"}],
        "telecom": [{"system": "pigeon", "value": "x"}],
        "identifier": [{"use": "usual", "assigner": {"identifier": {"use": "wrong"}}}],
        "contained": [{"resourceType": "Observation", "status": "guessed",
                       "code": {"text": "x"}}],
    }
    assert sorted(paths(checker.check(patient))) == [
        "Patient.contained[0].status",
        "Patient.identifier[0].assigner.identifier.use",
        "Patient.name[1].use",
        "Patient.telecom[0].system",
    ]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient", "gender": "robot"}}]}
    assert paths(checker.check(bundle)) == ["Bundle.entry[0].resource.gender"]


@pytest.mark.parametrize(("coding", "ok"), [
    ([{"system": CLINICAL, "code": "active"}], True),
    ([{"system": "http://snomed.info/sct", "code": "55561003"},
      {"system": CLINICAL, "code": "active"}], True),
    ([{"code": "active"}], True),
    ([{"system": CLINICAL, "code": "sleeping"}], False),
    ([{"system": "http://snomed.info/sct", "code": "55561003"}], False),
])
def test_codeable_concepts_need_one_coding_from_the_value_set(checker, coding, ok):
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                 "clinicalStatus": {"coding": coding}}
    issues = checker.check(condition)
    assert (issues == []) is ok
    if not ok:
        assert paths(issues) == ["Condition.clinicalStatus"]


def test_text_only_concepts_and_unexpandable_value_sets_pass(checker):
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                 "clinicalStatus": {"text": "it is active"}}
    assert checker.check(condition) == []
    # Attachment.contentType is bound to MIME types, which the package cannot expand
    doc = {"resourceType": "DocumentReference", "status": "current",
           "content": [{"attachment": {"contentType": "application/x-anything"}}]}
    assert checker.check(doc) == []


def test_code_system_implied_by_a_binding(checker):
    assert checker.code_system("Patient", ("gender",)) == \
        "http://hl7.org/fhir/administrative-gender"
    assert checker.code_system("Patient", ("contact", "gender")) == \
        "http://hl7.org/fhir/administrative-gender"
    assert checker.code_system("Patient", ("name",)) is None
    assert checker.code_system("Patient", ("birthDate",)) is None
    assert checker.code_system("Patient", ()) is None


def test_validator_reports_binding_issues():
    resource = {"resourceType": "Patient", "id": "p1", "gender": "robot"}
    issues = FhirkitValidator().validate(resource, jsonio.dumps(resource))
    assert paths(issues) == ["Patient.gender"]


async def test_create_with_a_bad_code_is_a_400_with_the_path(client):
    response = await client.post("Patient", content=b'{"resourceType":"Patient",'
                                 b'"gender":"robot"}', headers=FHIR_JSON)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["expression"] for i in outcome["issue"]] == [["Patient.gender"]]
    assert outcome["issue"][0]["code"] == "code-invalid"


def _examples() -> list[Path]:
    folder = shared_path("fhir", "r4-examples")
    return [p for p in sorted(folder.glob("*.json")) if p.name != "package.json"]


def test_every_r4_example_and_synthea_resource_passes(checker):
    validator = FhirkitValidator(checker)
    resources = [jsonio.loads(p.read_bytes()) for p in _examples()]
    for path in sorted(shared_path("fhir", "synthea").glob("*.json")):
        resources.extend(e["resource"] for e in jsonio.loads(path.read_bytes())["entry"])
    assert len(resources) > 7000
    failures = {f"{r['resourceType']}/{r.get('id')}": [i.diagnostics for i in found]
                for r in resources if (found := checker.check(r))}
    assert failures == {}
    # and through the full validator, for the examples (fhirkit included)
    for r in resources[:80]:
        assert not [i for i in validator.validate(r, jsonio.dumps(r))
                    if i.code == "code-invalid"]
