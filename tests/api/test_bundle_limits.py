"""Configured bundle limits: too many entries is refused before anything is processed."""

from __future__ import annotations

import httpx
import pytest

from fhirpm.config import Settings
from tests.conftest import FHIR_JSON

PATIENT = {"resourceType": "Patient", "gender": "male"}


@pytest.fixture
def settings(settings: Settings) -> Settings:  # the suite's store (SQLite, then MongoDB)
    return settings.model_copy(update={"bundle_max_entries": 2, "max_body_bytes": 4096})


def _bundle(n: int, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}
                      for _ in range(n)]}


@pytest.mark.parametrize("kind", ["batch", "transaction"])
async def test_entry_limit(client: httpx.AsyncClient, kind: str) -> None:
    r = await client.post("", json=_bundle(3, kind), headers=FHIR_JSON)
    assert r.status_code == 403
    issue = r.json()["issue"][0]
    assert issue["code"] == "too-costly" and issue["expression"] == ["Bundle.entry"]
    assert (await client.get("Patient/_history")).json()["total"] == 0
    ok = await client.post("", json=_bundle(2, kind), headers=FHIR_JSON)
    assert ok.status_code == 200


async def test_body_limit_applies_to_bundles(client: httpx.AsyncClient) -> None:
    big = _bundle(1)
    big["entry"][0]["resource"] = {**PATIENT, "name": [{"text": "x" * 5000}]}
    r = await client.post("", json=big, headers=FHIR_JSON)
    assert r.status_code == 413
