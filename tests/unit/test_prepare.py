"""What a worker prepares ahead (fhirpm.repository.prepare) is what the write would have
found itself: the same validation errors and, once the meta-dependent parameters are
extracted again with the real meta, the same index entries; and the entry codec gives back
equal values. Run in-process (the worker's function is a plain function); the pool itself
is exercised over HTTP in tests/api/test_bundle_prepare.py."""

from __future__ import annotations

import pickle
from collections import Counter
from decimal import Decimal
from typing import Any

from fhirpm.fhir import jsonio
from fhirpm.fhir.validation import FhirkitValidator
from fhirpm.repository import prepare
from fhirpm.repository.service import _with_meta
from fhirpm.search import entry_codec
from fhirpm.search.dates import date_range
from fhirpm.search.extract import RegistryIndexer, _instant_range
from fhirpm.search.registry import Registry
from tests.conftest import shared_path

BASE = "http://testserver/fhir"
STAMP = "2026-11-28T18:00:00.123456Z"

SAMPLE: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "meta": {"tag": [{"system": "s", "code": "t"}],
                                                     "versionId": "7"},
     "identifier": [{"system": "urn:mrn", "value": "12",
                     "type": {"coding": [{"system": "http://x", "code": "MR"}]}}],
     "name": [{"family": "Chalmers", "given": ["Peter"]}], "gender": "male",
     "birthDate": "1974-12", "deceasedBoolean": False},
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Weight"},
     "subject": {"reference": "Patient/p1"},
     "effectiveDateTime": "2024-03-05T10:00:00+01:00",
     "valueQuantity": {"value": Decimal("72.50"), "unit": "kg",
                       "system": "http://unitsofmeasure.org", "code": "kg"}},
    {"resourceType": "Encounter", "id": "e1", "status": "finished",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
     "subject": {"reference": f"{BASE}/Patient/p1"},
     "period": {"start": "2024-03-05T10:00:00.5Z"}},
]


def _items(resources: list[dict[str, Any]]) -> list[prepare.Item]:
    return [(r["resourceType"], r["id"], r) for r in resources]


def _as_written(resource: dict[str, Any]) -> dict[str, Any]:
    return _with_meta(resource, resource["id"], 3, STAMP)


def _check_same_as_in_process(resources: list[dict[str, Any]]) -> None:
    indexer = RegistryIndexer(Registry.load_default(), local_base=BASE)
    # through pickle both ways, as to and from a worker
    sent = pickle.loads(pickle.dumps((BASE, _items(resources))))
    results = pickle.loads(pickle.dumps(prepare._prepare_chunk(*sent)))
    assert len(results) == len(resources)
    for resource, (errors, rows) in zip(resources, results, strict=True):
        stored = _as_written(resource)
        assert errors is None
        ahead = entry_codec.decode(rows) + indexer.extract_meta(resource["resourceType"],
                                                                stored)
        expected = indexer.extract(resource["resourceType"], stored)
        assert Counter(ahead) == Counter(expected), resource["resourceType"]


def test_prepared_entries_equal_in_process_extraction() -> None:
    _check_same_as_in_process(SAMPLE)


def test_prepared_entries_equal_in_process_on_synthea() -> None:
    folder = shared_path("fhir", "synthea")
    resources = []
    for path in sorted(folder.glob("*.json"))[:3]:
        for n, entry in enumerate(jsonio.loads(path.read_bytes())["entry"]):
            resources.append({**entry["resource"], "id": f"r{len(resources)}-{n}"})
    _check_same_as_in_process(resources)


def test_only_lastupdated_is_extracted_again() -> None:
    indexer = RegistryIndexer(Registry.load_default())
    assert indexer.meta_codes("Observation") == {"_lastUpdated"}
    entries = indexer.extract_meta("Observation", _as_written(SAMPLE[1]))
    assert [e.param for e in entries] == ["_lastUpdated"]


def test_validation_errors_come_back_as_the_write_would_raise_them() -> None:
    bad = {"resourceType": "Observation", "id": "o2", "status": "not-a-status",
           "code": {"text": "x"}}
    [(errors, rows)] = prepare._prepare_chunk(BASE, [("Observation", "o2", bad)])
    assert rows is None
    issues = FhirkitValidator().validate(_as_written(bad), jsonio.dumps(_as_written(bad)))
    assert errors == [i for i in issues if i.severity in ("error", "fatal")]
    assert errors


def test_fast_instant_reading_agrees_with_date_range() -> None:
    for text in ("2026-11-28T18:00:00.123456Z", "1991-07-08T01:39:26+00:00",
                 "1991-07-08T01:39:26-05:30", "2024-02-29T23:59:59.9Z",
                 "0001-01-01T00:00:00Z", "2024-01-01T10:00:00.12+14:00"):
        assert _instant_range(text) == date_range(text), text
    for text in ("2023-02-29T10:00:00Z", "2024-12-31T23:59:60Z", "2024-01-01T10:00Z",
                 "2024-01-01", "9999-12-31T23:59:59.999999Z", " 2024-01-01T10:00:00Z"):
        assert _instant_range(text) is None, text
