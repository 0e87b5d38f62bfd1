"""Write-time extraction: what `RegistryIndexer` indexes for each parameter type."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from fhirpm.search.dates import date_range
from fhirpm.search.extract import (
    MAX_INSTANT,
    MIN_INSTANT,
    RegistryIndexer,
    component_values,
    index_values,
)
from fhirpm.search.registry import Registry, SearchParamDef
from fhirpm.search.values import (
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from tests.conftest import FHIR_JSON

MRN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
       "text": "Medical record number"}
PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "meta": {"lastUpdated": "2024-05-01T10:00:00.123456Z", "source": "http://src/1",
             "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
             "tag": [{"system": "http://tags", "code": "vip", "display": "V.I.P."}],
             "security": [{"system": "http://sec", "code": "R"}]},
    "identifier": [{"system": "http://hospital/mrn", "value": "12345", "type": MRN}],
    "name": [{"use": "official", "family": "Dürer", "given": ["Émilie", "Anne"],
              "text": "Émilie  Anne Dürer"},
             {"use": "maiden", "family": "Dürer"}],
    "telecom": [{"system": "phone", "value": "555-0100"},
                {"system": "email", "value": "e@example.org"}],
    "gender": "female", "birthDate": "1980-02-29",
    "address": [{"line": ["1 Rue Ça"], "city": "Zürich", "postalCode": "8000"}],
    "generalPractitioner": [{"reference": "Practitioner/dr1"}],
}


@pytest.fixture(scope="module")
def indexer() -> RegistryIndexer:
    return RegistryIndexer(Registry.load_default())


def values(indexer: RegistryIndexer, resource: dict, param: str) -> list:
    return [e.value for e in indexer.extract(resource["resourceType"], resource)
            if e.param == param]


def test_strings_are_folded_and_keep_the_raw_text(indexer):
    names = values(indexer, PATIENT, "name")
    assert StringValue("durer", "Dürer") in names
    assert StringValue("emilie", "Émilie") in names
    assert StringValue("emilie anne durer", "Émilie  Anne Dürer") in names
    assert len(names) == len(set(names))  # the maiden name's family is not repeated
    assert values(indexer, PATIENT, "family") == [StringValue("durer", "Dürer")]
    assert StringValue("zurich", "Zürich") in values(indexer, PATIENT, "address")
    assert StringValue("1 rue ca", "1 Rue Ça") in values(indexer, PATIENT, "address")
    assert values(indexer, PATIENT, "address-city") == [StringValue("zurich", "Zürich")]


def test_tokens(indexer):
    # a code's implicit system comes from its required binding
    assert values(indexer, PATIENT, "gender") == [
        TokenValue("http://hl7.org/fhir/administrative-gender", "female")]
    assert values(indexer, PATIENT, "identifier") == [
        TokenValue("http://hospital/mrn", "12345", "medical record number")]
    assert values(indexer, PATIENT, "identifier:of-type") == [
        TokenValue("http://terminology.hl7.org/CodeSystem/v2-0203|MR", "12345")]
    assert values(indexer, PATIENT, "phone") == [TokenValue("phone", "555-0100")]
    assert values(indexer, PATIENT, "email") == [TokenValue("email", "e@example.org")]
    assert values(indexer, PATIENT, "deceased") == [TokenValue(None, "false")]
    # stores answer `_id` from the resource's id: extracted only when asked for
    assert values(indexer, PATIENT, "_id") == []
    assert [e.value for e in indexer.extract("Patient", PATIENT, only={"_id"})] == [
        TokenValue(None, "p1")]
    assert values(indexer, PATIENT, "_tag") == [TokenValue("http://tags", "vip", "v.i.p.")]
    assert values(indexer, PATIENT, "_security") == [TokenValue("http://sec", "R")]


def test_codeable_concepts_index_codings_and_text(indexer):
    obs = {"resourceType": "Observation", "status": "final", "code": {
        "coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"},
                   {"system": "http://snomed.info/sct", "code": "27113001"}],
        "text": "Weight"}}
    assert values(indexer, obs, "code") == [
        TokenValue("http://loinc.org", "29463-7", "body weight"),
        TokenValue("http://snomed.info/sct", "27113001"),
        TokenValue(None, None, "weight"),
    ]


def test_dates_honour_precision_periods_and_timing(indexer):
    day = date_range("1980-02-29")
    assert values(indexer, PATIENT, "birthdate") == [DateValue(*day)]
    at = date_range("2024-05-01T10:00:00.123456Z")[0]
    assert values(indexer, PATIENT, "_lastUpdated") == [DateValue(at, at)]
    encounter = {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
                 "period": {"start": "2024-03"}}
    march = date_range("2024-03")
    assert values(indexer, encounter, "date") == [DateValue(march[0], MAX_INSTANT)]
    encounter["period"] = {"end": "2024-03-05T10:00:00+02:00"}
    end = date_range("2024-03-05T10:00:00+02:00")[1]
    assert values(indexer, encounter, "date") == [DateValue(MIN_INSTANT, end)]
    request = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"},
               "occurrenceTiming": {"event": ["2024-01-10", "2024-01-02"],
                                    "repeat": {"boundsPeriod": {"end": "2024-02-01"}}}}
    assert values(indexer, request, "occurrence") == [
        DateValue(MIN_INSTANT, date_range("2024-02-01")[1])]
    request["occurrenceTiming"] = {"event": ["2024-01-10", "2024-01-02"]}
    assert values(indexer, request, "occurrence") == [
        DateValue(date_range("2024-01-02")[0], date_range("2024-01-10")[1])]


def test_quantities_numbers_and_ranges(indexer):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
           "valueQuantity": {"value": Decimal("72.50"), "unit": "kg",
                             "system": "http://unitsofmeasure.org", "code": "kg"}}
    assert values(indexer, obs, "value-quantity") == [
        QuantityValue(72.5, 72.495, 72.505, "http://unitsofmeasure.org", "kg", "kg")]
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                 "onsetRange": {"low": {"value": 10, "unit": "a"}}}
    [age] = values(indexer, condition, "onset-age")
    assert (age.value, age.lo, age.hi, age.unit) == (10.0, 9.5, float("inf"), "a")
    risk = {"resourceType": "RiskAssessment", "status": "final",
            "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": Decimal("0.25")}]}
    assert values(indexer, risk, "probability") == [NumberValue(0.25, 0.245, 0.255)]
    charge = {"resourceType": "ChargeItem", "status": "billable", "code": {"text": "x"},
              "subject": {"reference": "Patient/p1"},
              "priceOverride": {"value": Decimal("12.00"), "currency": "EUR"}}
    [price] = values(indexer, charge, "price-override")
    assert (price.value, price.system, price.code) == (12.0, "urn:iso:std:iso:4217", "EUR")


def test_references(indexer):
    def obs(subject: dict) -> dict:
        return {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": subject, "contained": [{"resourceType": "Patient", "id": "c1"}]}

    assert values(indexer, obs({"reference": "Patient/p1"}), "patient") == [
        ReferenceValue("Patient", "p1")]
    assert values(indexer, obs({"reference": "Group/g1"}), "patient") == []
    assert values(indexer, obs({"reference": "Group/g1"}), "subject") == [
        ReferenceValue("Group", "g1")]
    absolute = "https://other.org/fhir/Patient/9/_history/1"
    assert values(indexer, obs({"reference": absolute}), "subject") == [
        ReferenceValue("Patient", "9", "https://other.org/fhir/Patient/9")]
    assert values(indexer, obs({"reference": "#c1"}), "subject") == []
    by_identifier = {"type": "Patient", "identifier": {"system": "http://mrn", "value": "7"}}
    assert values(indexer, obs(by_identifier), "patient") == [
        ReferenceValue(None, None, identifier=TokenValue("http://mrn", "7"))]
    answers = {"resourceType": "QuestionnaireResponse", "status": "completed",
               "questionnaire": "http://forms.org/Questionnaire/intake|2.0"}
    assert values(indexer, answers, "questionnaire") == [ReferenceValue(
        "Questionnaire", "intake", "http://forms.org/Questionnaire/intake", "2.0")]
    assert values(indexer, PATIENT, "general-practitioner") == [
        ReferenceValue("Practitioner", "dr1")]


def test_uris_and_common_parameters(indexer):
    assert values(indexer, PATIENT, "_profile") == [
        UriValue("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient")]
    assert values(indexer, PATIENT, "_source") == [UriValue("http://src/1")]


def test_composites_get_no_entries_of_their_own(indexer):
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "1"}]},
           "valueQuantity": {"value": 1}}
    params = {e.param for e in indexer.extract("Observation", obs)}
    assert "code-value-quantity" not in params and {"code", "value-quantity"} <= params


def test_malformed_values_are_skipped_not_raised(indexer):
    odd = {"resourceType": "Patient", "id": "x", "birthDate": "not-a-date", "gender": 5,
           "name": [{"family": 3, "given": [None, "Bo"]}], "telecom": "oops",
           "generalPractitioner": [{"reference": 12}]}
    entries = indexer.extract("Patient", odd)
    assert [e.value for e in entries if e.param == "given"] == [StringValue("bo", "Bo")]
    assert not [e for e in entries if e.param in ("birthdate", "general-practitioner")]


def test_custom_parameters_apply_without_restart():
    registry = Registry.load_default()
    indexer = RegistryIndexer(registry)
    patient = {"resourceType": "Patient", "id": "p", "extension": [
        {"url": "http://example.org/eye-colour", "valueCode": "green"}]}
    assert not [e for e in indexer.extract("Patient", patient) if e.param == "eye-colour"]
    registry.add(SearchParamDef(
        code="eye-colour", type="token", base=("Patient",), url="http://example.org/sp/eye",
        expression="Patient.extension('http://example.org/eye-colour').value"))
    registry.add(SearchParamDef(code="broken", type="token", base=("Patient",),
                                url="http://example.org/sp/broken",
                                expression="Patient.name.descendants()"))
    entries = indexer.extract("Patient", patient)
    assert [e.value for e in entries if e.param == "eye-colour"] == [TokenValue(None, "green")]
    assert "http://example.org/sp/broken" in indexer.skipped
    registry.remove("http://example.org/sp/eye")
    assert not [e for e in indexer.extract("Patient", patient) if e.param == "eye-colour"]


def test_aliases_are_not_stored_but_extracted_when_asked_for():
    registry = Registry.load_default()
    indexer = RegistryIndexer(registry)
    assert registry.aliases()["Patient"] == {"phonetic": "name"}
    assert "phonetic" not in registry.aliases().get("Organization", {})  # name reads alias
    stored = indexer.extract("Patient", PATIENT)
    assert "phonetic" not in {e.param for e in stored}
    asked = indexer.extract("Patient", PATIENT, only={"phonetic"})
    assert [e.value for e in asked] == [e.value for e in stored if e.param == "name"]

    # a custom definition that selects something else is no alias: its entries are stored
    registry.add(SearchParamDef(code="phonetic", type="string", base=("Patient",),
                                url="http://example.org/sp/phonetic",
                                expression="Patient.name.text"))
    assert "Patient" not in registry.aliases()
    assert values(indexer, PATIENT, "phonetic") == [
        StringValue("emilie anne durer", "Émilie  Anne Dürer")]


async def test_the_server_indexes_with_the_registry(app, client, settings):
    repo = app.state.interactions.repo
    assert isinstance(repo.indexer, RegistryIndexer) and repo.indexer.registry is repo.registry
    response = await client.post("Patient", json={"resourceType": "Patient",
                                                  "name": [{"family": "Ågren"}]},
                                 headers=FHIR_JSON)
    assert response.status_code == 201
    path = Path(settings.store_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:
        # the adapter may qualify the code (`Patient.family`): match the suffix
        rows = db.execute("SELECT norm, raw FROM ix_string WHERE param LIKE '%family'"
                          ).fetchall()
    assert rows == [("agren", "Ågren")]


def test_composite_components_are_evaluated_per_item():
    registry = Registry.load_default()
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
           "component": [
               {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "unit": "mmHg"}},
               {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": 80, "unit": "mmHg"}}]}
    param = registry.get("Observation", "component-code-value-quantity")
    rows = component_values(registry, param, "Observation", obs)
    assert [(codes[0].code, quantities[0].value) for codes, quantities in rows] == [
        ("8480-6", 120.0), ("8462-4", 80.0)]
    combo = registry.get("Observation", "combo-code-value-quantity")
    assert len(component_values(registry, combo, "Observation", obs)) == 3  # itself + 2
    assert component_values(registry, registry.get("Observation", "code"), "Observation",
                            obs) == []
    assert index_values("token", {"coding": [{"code": "a"}, {"code": "a"}]}) == [
        TokenValue(None, "a")]


def test_references_to_our_own_base_are_local():
    indexer = RegistryIndexer(Registry.load_default(), local_base="http://fhir.local/fhir/")
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "http://fhir.local/fhir/Patient/p1"},
           "hasMember": [{"reference": "http://fhir.local/fhirish/Observation/o2"}]}
    assert values(indexer, obs, "patient") == [ReferenceValue("Patient", "p1")]
    assert values(indexer, obs, "has-member") == [ReferenceValue(
        "Observation", "o2", "http://fhir.local/fhirish/Observation/o2")]
