"""Which patients a resource belongs to, from its index entries and the R4 Patient
compartment definition."""

from __future__ import annotations

from fhirpm.audit.patients import patient_params, patients_of
from fhirpm.search.extract import RegistryIndexer
from fhirpm.search.registry import Registry


def entries(type_: str, resource: dict) -> list:
    return RegistryIndexer(Registry.load_default()).extract(type_, resource)


def test_an_observation_belongs_to_its_subject_and_performer_patients() -> None:
    observation = {"resourceType": "Observation", "id": "o1", "status": "final",
                   "code": {"text": "weight"}, "subject": {"reference": "Patient/p1"},
                   "performer": [{"reference": "Patient/p2"},
                                 {"reference": "Practitioner/d1"}],
                   "focus": [{"reference": "Patient/p3"}]}
    assert {"subject", "performer"} <= patient_params("Observation")
    # focus is not a Patient-compartment link of Observation
    found = patients_of("Observation", "o1", entries("Observation", observation))
    assert sorted(found) == ["p1", "p2"]  # each once


def test_a_patient_belongs_to_itself_and_unrelated_types_to_nobody() -> None:
    assert patients_of("Patient", "p9", []) == ("p9",)
    organization = {"resourceType": "Organization", "id": "org", "name": "Clinic"}
    assert patients_of("Organization", "org", entries("Organization", organization)) == ()


def test_other_references_do_not_count() -> None:
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished",
                 "class": {"code": "AMB"}, "subject": {"reference": "Group/g1"},
                 "participant": [{"individual": {"reference": "Practitioner/d1"}}]}
    assert patients_of("Encounter", "e1", entries("Encounter", encounter)) == ()
