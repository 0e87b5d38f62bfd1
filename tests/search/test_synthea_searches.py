"""The Synthea data searched the way a practice does, with every expectation computed from
the loaded JSON (never hard-coded): patient by name + birthdate, by identifier; Appointment
by practitioner + date range; Coverage by patient; Claim by patient + created. Then a
broader set of queries, each checked against the in-memory oracle over the same data."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from fhirpm.search.match import MemoryIndex
from fhirpm.search.parse import SearchParser
from tests.conftest import shared_path
from tests.search import synthea
from tests.search.helpers import ids, link


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


async def _all(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> list[str]:
    page = (await client.get(path, params={**params, "_count": "100"})).json()
    found = ids(page)
    while url := link(page, "next"):
        page = (await client.get(url)).json()
        found += ids(page)
    return found


async def test_practice_searches(app: FastAPI, client: httpx.AsyncClient) -> None:
    folder: Path = shared_path("fhir", "synthea")
    ix = app.state.interactions
    oracle = MemoryIndex()  # fed the very entries the store gets
    extract = ix.repo.indexer.extract

    def recording(type_: str, resource: dict[str, Any]) -> list:
        entries = extract(type_, resource)
        oracle.put(type_, resource["id"], entries)
        return entries

    ix.repo.indexer.extract = recording
    try:
        stored = await synthea.load(ix, folder, patients=4)
    finally:
        del ix.repo.indexer.extract
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in stored:
        by_type.setdefault(r["resourceType"], []).append(r)
    patients = by_type["Patient"]
    assert len(patients) == 4

    for p in patients:  # front desk: name + date of birth, then the MRN
        family, given = p["name"][0]["family"], p["name"][0]["given"][0]
        found = await _all(client, "Patient", {"family": family[:4], "given": given,
                                               "birthdate": p["birthDate"]})
        assert found == [p["id"]]
        mrn = next(i for i in p["identifier"] if i.get("type", {}).get("coding", [{}])[0]
                   .get("code") == "MR")
        assert await _all(client, "Patient", {"identifier": f"{mrn['system']}|{mrn['value']}"}
                          ) == [p["id"]]

    appointments = by_type["Appointment"]
    doctor = max({a["participant"][1]["actor"]["reference"] for a in appointments
                  if len(a["participant"]) > 1},
                 key=lambda d: sum(len(a["participant"]) > 1 and a["participant"][1]["actor"][
                     "reference"] == d for a in appointments))
    starts = sorted(_utc(a["start"]) for a in appointments)
    lo, hi = starts[len(starts) // 4], starts[3 * len(starts) // 4]
    expected = sorted(a["id"] for a in appointments
                      if any(x["actor"]["reference"] == doctor for x in a["participant"])
                      and lo <= _utc(a["start"]) < hi)
    found = await _all(client, "Appointment", {
        "practitioner": doctor, "date": [f"ge{lo.isoformat()}", f"lt{hi.isoformat()}"]})
    assert sorted(found) == expected and expected

    for p in patients:  # billing: coverage and claims of a patient
        ref = f"Patient/{p['id']}"
        coverages = sorted(c["id"] for c in by_type["Coverage"]
                           if c["beneficiary"]["reference"] == ref)
        assert sorted(await _all(client, "Coverage", {"patient": ref})) == coverages
        claims = [c for c in by_type["Claim"] if c["patient"]["reference"] == ref]
        cutoff = sorted(_utc(c["created"]) for c in claims)[len(claims) // 2]
        day = cutoff.date().isoformat()
        expected = sorted(c["id"] for c in claims if _utc(c["created"]).date() >= cutoff.date())
        found = await _all(client, "Claim", {"patient": ref, "created": f"ge{day}"})
        assert sorted(found) == expected and expected

    parser = SearchParser(ix.repo.registry, default_count=1000, max_count=1000)
    patient = patients[0]
    mine = [o for o in by_type["Observation"]
            if o["subject"]["reference"] == f"Patient/{patient['id']}"]
    category = Counter(c["code"] for o in mine for cat in o.get("category", [])
                       for c in cat["coding"]).most_common(1)[0][0]
    measured = Counter(f"{c['system']}|{c['code']}" for o in by_type["Observation"]
                       if "valueQuantity" in o for c in o["code"]["coding"])
    code = measured.most_common(1)[0][0]
    values = sorted(o["valueQuantity"]["value"] for o in by_type["Observation"]
                    if "valueQuantity" in o and f"{o['code']['coding'][0]['system']}|"
                    f"{o['code']['coding'][0]['code']}" == code)
    word = by_type["Condition"][0]["code"]["text"].split()[-1]
    status = by_type["Encounter"][0]["status"]
    queries = [
        ("Observation", [("subject", f"Patient/{patient['id']}"), ("category", category)]),
        ("Observation", [("code", code), ("value-quantity", f"gt{values[len(values) // 2]}")]),
        ("Observation", [("patient.gender", patient["gender"]), ("date", "ge2015")]),
        ("Encounter", [("patient", patient["id"]), ("_sort", "-date")]),
        ("Encounter", [("participant.name", "a"), ("status:not", "cancelled")]),
        ("Condition", [("code:text", word.lower())]),
        ("Patient", [("_has:Condition:patient:code:text", word.lower())]),
        ("Practitioner", [("_has:Encounter:participant:patient", patient["id"])]),
        ("Claim", [("created", "lt2012"), ("_sort", "created")]),
        ("Organization", [("address-state", "MA"), ("name:contains", "health")]),
        ("Patient", [("_profile", "http://hl7.org/fhir/us/core/StructureDefinition/"
                                  "us-core-patient")]),
        ("Encounter", [("status", status), ("_sort", "patient,-date")]),
    ]
    sizes: list[int] = []
    for type_, params in queries:
        query = parser.parse([type_], params, strict=True).query
        want, _ = oracle.search(query)
        got = await _all(client, type_, dict(params))
        assert sorted(got) == sorted(i for _, i in want), (type_, params)
        sizes.append(len(got))
        if query.sort:
            assert got == [i for _, i in want], (type_, params)
    assert sum(1 for n in sizes if n) >= len(queries) - 2, sizes  # the queries do select
