"""Where benchmark inputs come from: ../shared/data (or FHIRPM_SHARED_DATA) when present."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SHARED_DATA = Path(os.environ.get(
    "FHIRPM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# used when the shared examples are absent: a Patient of typical size with a narrative
_FALLBACK_PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "text": {"status": "generated",
             "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">" + "Peter Chalmers " * 40
                    + "</div>"},
    "identifier": [{"use": "usual", "system": "urn:oid:1.2.36.146.595.217.0.1",
                    "value": "12345"}],
    "active": True,
    "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
    "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work"}],
    "gender": "male", "birthDate": "1974-12-25",
    "address": [{"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille",
                 "postalCode": "3999"}],
}


def shared(*parts: str) -> Path | None:
    path = SHARED_DATA.joinpath(*parts)
    return path if path.exists() else None


def sample_patient() -> dict[str, Any]:
    """The spec's example Patient (with narrative and extensions) without its id."""
    path = shared("fhir", "r4-examples", "Patient-example.json")
    patient = json.loads(path.read_text()) if path else dict(_FALLBACK_PATIENT)
    patient.pop("id", None)
    patient.pop("meta", None)
    return patient


def synthea_files() -> list[Path]:
    """Synthea's shared bundles first (hospital, practitioners), then patient bundles."""
    folder = shared("fhir", "synthea")
    if folder is None:
        raise SystemExit(f"Synthea data not found under {SHARED_DATA} "
                         "(set FHIRPM_SHARED_DATA to the shared data folder)")
    files = sorted(folder.glob("*.json"))
    first = ("hospitalInformation", "practitionerInformation")
    return sorted(files, key=lambda p: next(
        (n for n, prefix in enumerate(first) if p.name.startswith(prefix)), len(first)))
