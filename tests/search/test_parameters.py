"""Every parameter type and modifier, over HTTP with the real extraction, after the
spec's own examples (http://hl7.org/fhir/R4/search.html): each case is a query and the ids
it must return, in order when `_sort` is given, as a set otherwise."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.helpers import ids, put_all, search

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ACME = "http://acme.org/patient"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

DATA: list[dict[str, Any]] = [
    {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Watson"}]},
    {"resourceType": "Practitioner", "id": "dr2", "name": [{"family": "Holmes"}]},
    {"resourceType": "Patient", "id": "p1",
     "meta": {"tag": [{"system": "http://acme.org/tags", "code": "vip"}],
              "profile": ["http://acme.org/fhir/StructureDefinition/patient-x"],
              "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                            "code": "R"}],
              "source": "http://acme.org/source#a"},
     "name": [{"family": "Chalmers", "given": ["Peter", "James"]}], "gender": "male",
     "birthDate": "1974-12-25",
     "identifier": [{"system": ACME, "value": "2345",
                     "type": {"coding": [{"system": V2_0203, "code": "MR"}]}}],
     "generalPractitioner": [{"reference": "Practitioner/dr1"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Adams", "given": ["Eve"]}],
     "gender": "female", "birthDate": "1980-03",
     "identifier": [{"system": ACME, "value": "6789"}],
     "generalPractitioner": [{"reference": "Practitioner/dr2"}]},
    {"resourceType": "Patient", "id": "p3", "name": [{"family": "Renée", "given": ["Evelyn"]}],
     "gender": "female", "identifier": [{"value": "x1"}]},
    {"resourceType": "Patient", "id": "p4", "name": [{"family": "Müller", "given": ["Severine"]}],
     "gender": "other", "birthDate": "2001-05-06"},
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "8480-6",
                          "display": "Systolic blood pressure"}]},
     "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/dr1"}],
     "effectiveDateTime": "2024-01-10T10:00:00Z",
     "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
    {"resourceType": "Observation", "id": "o2", "status": "preliminary",
     "code": {"coding": [{"system": LOINC, "code": "8310-5", "display": "Body temperature"}]},
     "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2024-02-01",
     "valueQuantity": {"value": 37.5, "unit": "C", "system": UCUM, "code": "Cel"}},
    {"resourceType": "Observation", "id": "o3", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
     "subject": {"identifier": {"system": ACME, "value": "2345"}},
     "effectivePeriod": {"start": "2023-12-30", "end": "2024-01-02"},
     "valueQuantity": {"value": 5.4, "unit": "mg", "system": UCUM, "code": "mg"}},
    {"resourceType": "Observation", "id": "o4", "status": "amended",
     "code": {"text": "Blood pressure panel"},
     "subject": {"reference": "http://other.org/fhir/Patient/p1"}},
    {"resourceType": "RiskAssessment", "id": "r1", "status": "final",
     "subject": {"reference": "Patient/p1"}, "prediction": [{"probabilityDecimal": 0.55}]},
    {"resourceType": "RiskAssessment", "id": "r2", "status": "final",
     "subject": {"reference": "Patient/p2"}, "prediction": [{"probabilityDecimal": 0.8}]},
    {"resourceType": "ValueSet", "id": "vs1", "url": "http://acme.org/fhir/ValueSet/bp",
     "status": "active",
     "compose": {"include": [{"system": LOINC, "concept": [{"code": "8480-6"}]}]}},
    {"resourceType": "ValueSet", "id": "vs2", "url": "http://acme.org/fhir/ValueSet/bp/v2",
     "status": "draft"},
    {"resourceType": "Appointment", "id": "a1", "status": "booked",
     "start": "2024-03-01T09:00:00Z", "end": "2024-03-01T09:30:00Z",
     "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                     {"actor": {"reference": "Practitioner/dr1"}, "status": "accepted"}]},
]

CASES: list[tuple[str, str, list[str]]] = [
    # string: starts-with, case and accent insensitive; :exact; :contains; :missing
    ("Patient", "given=eve", ["p2", "p3"]),
    ("Patient", "given:exact=Eve", ["p2"]),
    ("Patient", "given:contains=eve", ["p2", "p3", "p4"]),
    ("Patient", "family=renee", ["p3"]),
    ("Patient", "family=MULL", ["p4"]),
    ("Patient", "name=james", ["p1"]),
    ("Patient", "birthdate:missing=true", ["p3"]),
    ("Patient", "given=eve,peter", ["p1", "p2", "p3"]),  # OR by comma
    ("Patient", "given=eve&family=adams", ["p2"]),  # AND by repetition
    # token: code, system|code, |code, system|, :not, :text, :of-type, :in, :not-in, :missing
    ("Patient", "gender=female", ["p2", "p3"]),
    ("Patient", f"identifier={ACME}|2345", ["p1"]),
    ("Patient", "identifier=|x1", ["p3"]),
    ("Patient", f"identifier={ACME}|", ["p1", "p2"]),
    ("Patient", "identifier=2345", ["p1"]),
    ("Patient", "gender:not=female", ["p1", "p4"]),
    ("Observation", "code:text=blood", ["o1", "o4"]),
    ("Observation", "code:text=pressure", ["o1", "o4"]),
    ("Patient", f"identifier:of-type={V2_0203}|MR|2345", ["p1"]),
    ("Observation", "code:in=http://acme.org/fhir/ValueSet/bp", ["o1", "o3"]),
    ("Observation", "code:not-in=http://acme.org/fhir/ValueSet/bp", ["o2", "o4"]),
    ("Observation", "performer:missing=false", ["o1"]),
    ("Observation", "status=final,amended", ["o1", "o3", "o4"]),
    # reference: Type/id, id, :Type, absolute URL, own base URL, :identifier, :missing
    ("Observation", "subject=Patient/p1", ["o1"]),
    ("Observation", "subject=p1", ["o1"]),
    ("Observation", "subject:Patient=p1", ["o1"]),
    ("Observation", "subject=http://other.org/fhir/Patient/p1", ["o4"]),
    ("Observation", "subject=http://testserver/fhir/Patient/p2", ["o2"]),
    ("Observation", f"subject:identifier={ACME}|2345", ["o3"]),
    ("Observation", "subject:missing=true", []),
    # chains (any depth) and reverse chains (_has, nested)
    ("Observation", "subject:Patient.name=peter", ["o1"]),
    ("Observation", "subject.general-practitioner.name=holmes", ["o2"]),
    ("Observation", "patient.general-practitioner:Practitioner.family=watson", ["o1"]),
    ("Patient", "_has:Observation:patient:code=8480-6", ["p1"]),
    ("Practitioner", "_has:Patient:general-practitioner:_has:Observation:patient:status=final",
     ["dr1"]),
    # date: prefixes over precision ranges, periods and zones
    ("Patient", "birthdate=1974", ["p1"]),
    ("Patient", "birthdate=1980-03", ["p2"]),
    ("Patient", "birthdate=1980", ["p2"]),
    ("Patient", "birthdate=1980-03-05", []),  # the month is not within the day
    ("Patient", "birthdate=lt1980", ["p1"]),
    ("Patient", "birthdate=le1980-03", ["p1", "p2"]),
    ("Patient", "birthdate=gt1980-03-31", ["p4"]),
    ("Patient", "birthdate=ge1980-03", ["p2", "p4"]),
    ("Patient", "birthdate=ne1974-12-25", ["p2", "p4"]),
    ("Patient", "birthdate=sa1980-03", ["p4"]),
    ("Patient", "birthdate=eb1980", ["p1"]),
    ("Patient", "birthdate=ge1970&birthdate=lt1990", ["p1", "p2"]),
    ("Observation", "date=2024-01-01", []),  # the period is not within the day
    ("Observation", "date=ge2024-01-02", ["o1", "o2"]),  # o3 ends within, starts before
    ("Observation", "date=sa2024-01-05", ["o1", "o2"]),
    ("Observation", "date=eb2024-01-05", ["o3"]),
    ("Observation", "date=2024-01-10T12:00:00+02:00", ["o1"]),  # 10:00Z, to the second
    ("Observation", "date=2024-01", ["o1"]),
    ("Appointment", "date=ge2024-03-01T08:00:00Z&date=lt2024-03-02", ["a1"]),
    ("Patient", "birthdate=ap2001-05-01", ["p4"]),  # 10% of the gap to now
    # number: implicit precision for eq, exact value for comparisons
    ("RiskAssessment", "probability=0.55", ["r1"]),
    ("RiskAssessment", "probability=0.5", []),  # [0.45, 0.55): 0.55 is just outside
    ("RiskAssessment", "probability=gt0.6", ["r2"]),
    ("RiskAssessment", "probability=le0.55", ["r1"]),
    ("RiskAssessment", "probability=ne0.8", ["r1"]),
    # quantity: value with units by system|code, code alone, or none
    ("Observation", f"value-quantity=5.4|{UCUM}|mg", ["o3"]),
    ("Observation", "value-quantity=5.4||mg", ["o3"]),
    ("Observation", "value-quantity=lt60", ["o2", "o3"]),
    ("Observation", f"value-quantity=gt100|{UCUM}|mm[Hg]", ["o1"]),
    ("Observation", "value-quantity=ap37", ["o2"]),
    # uri: exact, :below, :above
    ("ValueSet", "url=http://acme.org/fhir/ValueSet/bp", ["vs1"]),
    ("ValueSet", "url:below=http://acme.org/fhir/ValueSet/bp", ["vs1", "vs2"]),
    ("ValueSet", "url:above=http://acme.org/fhir/ValueSet/bp/v2/_history/3", ["vs1", "vs2"]),
    # composite
    ("Observation", f"code-value-quantity={LOINC}|8480-6$lt60", ["o3"]),
    ("Observation", f"code-value-quantity={LOINC}|8480-6$gt60,{LOINC}|8310-5$gt37",
     ["o1", "o2"]),
    # common parameters
    ("Patient", "_id=p1,p3", ["p1", "p3"]),
    ("Patient", "_tag=http://acme.org/tags|vip", ["p1"]),
    ("Patient", "_profile=http://acme.org/fhir/StructureDefinition/patient-x", ["p1"]),
    ("Patient", "_security=R", ["p1"]),
    ("Patient", "_source=http://acme.org/source%23a", ["p1"]),
    ("Patient", "_lastUpdated=gt2000-01-01&gender=male", ["p1"]),
    ("Patient", "_lastUpdated=lt2000-01-01", []),
]

SORTED: list[tuple[str, str, list[str]]] = [
    ("Patient", "_sort=birthdate", ["p1", "p2", "p4", "p3"]),  # missing values last
    ("Patient", "_sort=-birthdate", ["p4", "p2", "p1", "p3"]),
    ("Patient", "_sort=gender,-family", ["p3", "p2", "p1", "p4"]),
    ("Observation", "_sort=-date&status=final", ["o1", "o3"]),
    ("Patient", "_sort=_id", ["p1", "p2", "p3", "p4"]),
]


@pytest.fixture
async def loaded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await put_all(client, DATA)
    return client


async def test_every_case(loaded: httpx.AsyncClient) -> None:
    failures = []
    for type_, query, want in CASES:
        bundle = await search(loaded, f"{type_}?{query}", headers={"Prefer": "handling=strict"})
        got = ids(bundle)
        if sorted(got) != sorted(want):
            failures.append(f"{type_}?{query}: got {sorted(got)}, want {sorted(want)}")
    for type_, query, want in SORTED:
        got = ids(await search(loaded, f"{type_}?{query}",
                               headers={"Prefer": "handling=strict"}))
        if got != want:
            failures.append(f"{type_}?{query}: got {got}, want {want} (in order)")
    assert not failures, "\n".join(failures)


async def test_compartment_search(loaded: httpx.AsyncClient) -> None:
    assert sorted(ids(await search(loaded, "Patient/p1/Observation"))) == ["o1"]
    assert ids(await search(loaded, "Patient/p1/Appointment?status=booked")) == ["a1"]
    assert ids(await search(loaded, "Patient/p1/Patient")) == ["p1"]
    everything = sorted(ids(await search(loaded, "Patient/p1/*")))
    assert [i for i in everything if not i.startswith("ae-")] == ["a1", "o1", "p1", "r1"]
    assert ids(await search(loaded, "Practitioner/dr1/Observation")) == ["o1"]


async def test_system_search_by_type(loaded: httpx.AsyncClient) -> None:
    bundle = await search(loaded, "", {"_type": "Patient,Practitioner", "_id": "p1,dr2"})
    assert sorted(ids(bundle)) == ["dr2", "p1"]
    bundle = await search(loaded, "", {"_type": "Patient,Practitioner", "name": "watson,eve"})
    assert sorted(ids(bundle)) == ["dr1", "p2", "p3"]
