"""`fhirpm load`: files, folders, NDJSON and Bundles through the REST interactions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirpm.app import build_interactions
from fhirpm.cli import main
from fhirpm.config import Settings
from fhirpm.loader import Loader, discover
from fhirpm.repository.interactions import Interactions
from fhirpm.storage.factory import store_from_settings

PATIENT = {"resourceType": "Patient", "id": "pat-1", "gender": "female",
           "name": [{"family": "Doe"}]}
OBSERVATION = ('{"resourceType":"Observation","status":"final","code":{"text":"weight"},'
               '"valueQuantity":{"value":72.50,"unit":"kg"}}')


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path / 'load.db'}", log_json=False)


@pytest.fixture
async def interactions(settings: Settings) -> AsyncIterator[Interactions]:
    store = store_from_settings(settings)
    ix = build_interactions(settings, store)
    await store.open()
    yield ix
    await store.close()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_discover_walks_folders_and_puts_synthea_shared_files_first(tmp_path: Path) -> None:
    for name in ("Alice_1.json", "practitionerInformation9.json", "Bob_2.json",
                 "hospitalInformation9.json", "notes.txt", "package.json", "more/x.ndjson"):
        write(tmp_path / name, "{}")
    names = [p.relative_to(tmp_path).as_posix() for p in discover([tmp_path])]
    assert names == ["hospitalInformation9.json", "practitionerInformation9.json",
                     "Alice_1.json", "Bob_2.json", "more/x.ndjson"]


async def test_loads_resources_ndjson_and_collections_with_errors_located(
        tmp_path: Path, interactions: Interactions) -> None:
    write(tmp_path / "data/patient.json", json.dumps(PATIENT))
    write(tmp_path / "data/obs.json", OBSERVATION)
    write(tmp_path / "data/deep/lines.ndjson", "\n".join([
        json.dumps({"resourceType": "Patient", "id": "pat-2"}),
        "{not json",
        "",
        json.dumps({"resourceType": "Patient", "id": "pat-3", "gender": 7}),
        json.dumps({"resourceType": "Practitioner"}),
    ]) + "\n")
    write(tmp_path / "data/collection.json", json.dumps({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {"resourceType": "Organization", "id": "org-1"}}]}))
    report = await Loader(interactions, "http://x/fhir").load(discover([tmp_path / "data"]))

    assert report.files == 4
    assert dict(report.created) == {"Patient": 2, "Observation": 1, "Practitioner": 1,
                                    "Organization": 1}
    located = {(e.source.removeprefix(str(tmp_path / "data") + "/"), e.status)
               for e in report.errors}
    assert located == {("deep/lines.ndjson:2", 400), ("deep/lines.ndjson:4", 400)}
    # ids in files are kept (PUT); decimals survive the load byte for byte
    stored = await interactions.repo.read("Patient", "pat-1")
    assert json.loads(stored.body)["name"] == PATIENT["name"]
    observations = [v for v in await interactions.repo.store.changes(0, 100)
                    if v.type == "Observation"]
    assert b'"value":72.50' in observations[0].body


async def test_reloading_files_with_ids_is_idempotent(
        tmp_path: Path, interactions: Interactions) -> None:
    files = [write(tmp_path / "p.json", json.dumps(PATIENT))]
    first = await Loader(interactions, "http://x/fhir").load(files)
    again = await Loader(interactions, "http://x/fhir").load(files)
    assert (first.created["Patient"], again.updated["Patient"]) == (1, 1)
    assert (await interactions.repo.read("Patient", "pat-1")).version == 1


def test_cli_prints_a_summary_and_fails_on_errors(
        tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "p.json", json.dumps(PATIENT))
    bad = write(tmp_path / "bad.json", '{"resourceType": "Patient", "gender": ')
    args = ["load", "--no-progress", "--store-url", settings.store_url]
    assert main([*args, str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Loaded 1 resources from 1 files")
    assert "Patient" in out
    assert main([*args, str(bad)]) == 1
    out = capsys.readouterr().out
    assert "Errors (1):" in out and "bad.json: 400 Malformed JSON" in out
    assert main([*args, str(tmp_path / "missing.json")]) == 2


def bundle(type_: str, *entries: dict) -> str:
    return json.dumps({"resourceType": "Bundle", "type": type_, "entry": list(entries)})


async def test_transactions_and_batches_go_through_the_rest_path(
        tmp_path: Path, interactions: Interactions) -> None:
    patient_url = "urn:uuid:6f1f7b0e-9a52-4d8a-9a3e-000000000001"
    write(tmp_path / "tx.json", bundle(
        "transaction",
        {"fullUrl": patient_url, "resource": {"resourceType": "Patient", "gender": "male"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final",
                      "code": {"text": "pulse"}, "subject": {"reference": patient_url}},
         "request": {"method": "POST", "url": "Observation"}}))
    write(tmp_path / "batch.json", bundle(
        "batch",
        {"resource": {"resourceType": "Organization", "name": "Clinic"},
         "request": {"method": "POST", "url": "Organization"}},
        {"resource": {"resourceType": "Patient", "gender": "robot"},
         "request": {"method": "POST", "url": "Patient"}}))
    report = await Loader(interactions, "http://x/fhir").load(discover([tmp_path]))

    assert dict(report.created) == {"Patient": 1, "Observation": 1, "Organization": 1}
    assert [(e.source.rsplit("/", 1)[1], e.status) for e in report.errors] == [
        ("batch.json entry 1", 400)]
    stored = {v.type: json.loads(v.body) for v in await interactions.repo.store.changes(0, 10)}
    # the urn:uuid reference was rewritten to the id the transaction gave the Patient
    assert stored["Observation"]["subject"]["reference"] == f"Patient/{stored['Patient']['id']}"


async def test_a_failing_transaction_is_one_error_and_writes_nothing(
        tmp_path: Path, interactions: Interactions) -> None:
    write(tmp_path / "tx.json", bundle(
        "transaction",
        {"resource": {"resourceType": "Organization", "name": "Clinic"},
         "request": {"method": "POST", "url": "Organization"}},
        {"resource": {"resourceType": "Patient", "gender": "robot"},
         "request": {"method": "POST", "url": "Patient"}}))
    report = await Loader(interactions, "http://x/fhir").load(discover([tmp_path]))
    assert report.total == 0
    assert [(e.status, "gender" in e.message) for e in report.errors] == [(400, True)]
    assert await interactions.repo.store.changes(0, 10) == []
    head = await interactions.repo.store.audit_head()  # only the trail's record of it
    assert head is not None and b"400" in head.payload
