"""The mapping engine on our own messages: identities, nulls, events, site overrides."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from fhirpm.errors import Category
from fhirpm.hl7v2 import parser
from fhirpm.hl7v2.engine import Engine, MappingSet, Options, v2_datetime
from fhirpm.hl7v2.parser import V2Error
from tests.hl7v2.samples import adt, siu

ENGINE = Engine()


def mapped(text: str, options: Options | None = None):
    return ENGINE.map(parser.parse(text), options)


def one(result, type_: str):
    found = result.by_type(type_)
    assert len(found) == 1, [r.key for r in result.resources]
    return found[0]


def test_adt_becomes_a_transaction_of_conditional_updates() -> None:
    bundle = mapped(adt("A04")).bundle()
    assert bundle["type"] == "transaction"
    urls = {e["resource"]["resourceType"]: e["request"]["url"] for e in bundle["entry"]}
    assert urls["Patient"].startswith("Patient?identifier=")
    query = dict(parse_qsl(urls["Patient"].partition("?")[2]))
    assert query["identifier"] == "urn:fhirpm:hl7v2:authority:PRACTICE|MRN1"
    assert dict(parse_qsl(urls["Encounter"].partition("?")[2]))["identifier"].endswith("|V100")
    assert urls["Provenance"] == "Provenance"  # one new record per message
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])


def test_references_point_at_bundle_entries() -> None:
    result = mapped(adt("A01"))
    patient, encounter = one(result, "Patient"), one(result, "Encounter")
    assert encounter.body["subject"] == {"reference": patient.full_url}
    practitioner = one(result, "Practitioner")
    assert encounter.body["participant"][0]["individual"]["reference"] == practitioner.full_url
    provenance = one(result, "Provenance")
    assert {"reference": patient.full_url} in provenance.body["target"]


def test_patient_fields_and_datatypes() -> None:
    patient = one(mapped(adt()), "Patient").resource()
    assert patient["name"] == [{"family": "Doe", "given": ["Jane", "Q"]}]
    assert patient["gender"] == "female" and patient["birthDate"] == "1980-01-02"
    assert patient["telecom"] == [{"value": "555-1234", "use": "home", "system": "phone"}]
    assert patient["address"][0]["city"] == "Springfield"


def test_null_marks_deletion_and_empty_keeps() -> None:
    pid = 'PID|1||MRN1^^^PRACTICE^MR||Doe^Jane||""|F|||||""'
    patient = one(mapped(adt(pid=pid)), "Patient")
    assert {"birthDate", "telecom"} <= patient.deletes
    assert "birthDate" not in patient.body
    assert "address" not in patient.deletes  # empty: no information, keep what is stored


@pytest.mark.parametrize(("event", "status"), [("A03", "finished"), ("A11", "cancelled")])
def test_event_sets_encounter_status(event: str, status: str) -> None:
    assert one(mapped(adt(event)), "Encounter").resource()["status"] == status


@pytest.mark.parametrize(("event", "status"), [("S12", "booked"), ("S15", "cancelled"),
                                                ("S17", "entered-in-error"), ("S26", "noshow")])
def test_siu_status_by_event(event: str, status: str) -> None:
    appt = one(mapped(siu(event, status="")), "Appointment")
    assert appt.resource()["status"] == status
    assert appt.identity is not None and appt.identity.value == "APT1"


def test_siu_default_status_does_not_override_a_stored_one() -> None:
    appt = one(mapped(siu("S14", status="")), "Appointment")
    assert "status" not in appt.body and appt.defaults["status"] == "booked"


def test_siu_times_and_participants() -> None:
    result = mapped(siu())
    appt = one(result, "Appointment").resource()
    assert appt["start"] == "2024-03-01T09:00:00+01:00"
    assert appt["minutesDuration"] == 30
    actors = [p["actor"]["reference"] for p in appt["participant"]]
    assert one(result, "Patient").full_url in actors
    assert one(result, "Practitioner").full_url in actors


def test_a40_declares_a_merge() -> None:
    text = ("MSH|^~\\&|EHR|C|F|P|20240101||ADT^A40|M1|P|2.5.1\rEVN|A40\r"
            "PID|1||NEW1^^^P^MR||Doe^Jane\rMRG|OLD1^^^P^MR\r")
    result = mapped(text)
    assert result.merges == [("Patient#1", "MergedPatient#1")]
    old = next(r for r in result.resources if r.key == "MergedPatient#1")
    assert old.identity.value == "OLD1"


def test_unknown_event_is_rejected_with_its_code() -> None:
    with pytest.raises(V2Error) as err:
        mapped(adt("A99"))
    assert err.value.hl7_code == "201" and err.value.reject
    assert err.value.category is Category.NOT_SUPPORTED
    with pytest.raises(V2Error) as err:
        ENGINE.map(parser.parse(siu().replace("SIU^S12", "ORU^R01")))
    assert err.value.hl7_code == "200"


def test_resources_without_identifiers_get_stable_ids() -> None:
    a = one(mapped(adt(control="1")), "Location").identity
    b = one(mapped(adt(control="2")), "Location").identity
    assert a.id == b.id and a.id.startswith("v2-")


def test_content_ids_depend_on_the_patient() -> None:
    al1 = "AL1|1|DA|PCN^Penicillin"
    a = one(mapped(adt(extra=al1)), "AllergyIntolerance").identity
    other = adt(extra=al1, pid="PID|1||MRN2^^^PRACTICE^MR||Roe^Ann")
    b = one(mapped(other), "AllergyIntolerance").identity
    assert a.id != b.id


def test_a_guarantor_is_a_related_person_of_each_patient() -> None:
    """The same guarantor name on two patients' messages: two RelatedPersons (each its
    patient's), not one moved from patient to patient; a resend finds the same one."""
    gt1 = "GT1|1||Radiant^Lucy"
    ids = [one(mapped(adt(control=c, extra=gt1, pid=pid)), "RelatedPerson").identity.id
           for c, pid in (("1", "PID|1||MRN1^^^PRACTICE^MR||Doe^Jane"),
                          ("2", "PID|1||MRN2^^^PRACTICE^MR||Roe^Ann"),
                          ("3", "PID|1||MRN1^^^PRACTICE^MR||Doe^Jane"))]
    assert ids[0] != ids[1] and ids[0] == ids[2] and ids[0].startswith("v2-")


def test_sender_timezone_for_times_without_offset() -> None:
    assert v2_datetime("202401020304", "+01:00") == "2024-01-02T03:04:00+01:00"
    assert v2_datetime("202401020304") == "2024-01-02"
    assert v2_datetime("20240102030405.12+0530") == "2024-01-02T03:04:05.12+05:30"


def test_site_mapping_directory_overrides_a_definition(tmp_path: Path) -> None:
    (tmp_path / "vocabulary").mkdir()
    (tmp_path / "vocabulary" / "site.yaml").write_text(
        "AdministrativeSex:\n  system: http://hl7.org/fhir/administrative-gender\n"
        "  codes: {\"F\": other}\n")
    engine = Engine(MappingSet.load(Path(__file__).parents[2] / "mappings", tmp_path))
    patient = next(r for r in engine.map(parser.parse(adt())).resources if r.type == "Patient")
    assert patient.body["gender"] == "other"


def test_a_written_reference_must_name_a_top_level_element(tmp_path: Path) -> None:
    import copy

    import yaml

    base = Path(__file__).parents[2] / "mappings"
    structure = copy.deepcopy(MappingSet.load(base).messages["ADT_A01"])
    for row in structure["references"]:
        if row.get("written"):
            row["path"] = "entity[].what"  # nested: nothing the committer could trim
    (tmp_path / "messages").mkdir()
    (tmp_path / "messages" / "site.yaml").write_text(yaml.safe_dump({"ADT_A01": structure}))
    engine = Engine(MappingSet.load(base, tmp_path))
    with pytest.raises(V2Error) as raised:
        engine.map(parser.parse(adt("A01")))
    assert raised.value.category is Category.INTERNAL
    assert "top-level `path`" in str(raised.value)


def test_z_segment_is_not_mapped_but_not_an_error() -> None:
    result = mapped(adt(extra="ZPI|1|custom"))
    assert one(result, "Patient")
