"""Load the Synthea bundles straight through the repository (no bundle processing): ids
come from the `urn:uuid:` fullUrls, `urn:uuid:` references become `Type/id`, conditional
references (`Practitioner?identifier=...`) are resolved with `conditional.find_matches`.
Adds what a practice has and Synthea lacks: an Appointment per Encounter, and a Coverage
per ExplanationOfBenefit's contained `#coverage`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhirpm.fhir import jsonio
from fhirpm.repository import conditional
from fhirpm.repository.interactions import Interactions

SHARED_FIRST = ("hospitalInformation", "practitionerInformation")


def files(folder: Path) -> list[Path]:
    paths = sorted(folder.glob("*.json"))
    return sorted(paths, key=lambda p: (not p.name.startswith(SHARED_FIRST[0]),
                                        not p.name.startswith(SHARED_FIRST[1]), p.name))


async def load(ix: Interactions, folder: Path, patients: int = 10) -> list[dict[str, Any]]:
    """Load the first `patients` patient bundles and, from the shared bundles, the
    organizations, locations and practitioners they refer to; every stored resource (as
    stored, with ids and rewritten references)."""
    stored: list[dict[str, Any]] = []
    people = [jsonio.loads(p.read_bytes()) for p in files(folder)
              if not p.name.startswith(SHARED_FIRST)][:patients]
    needed = {ref.split("?identifier=", 1)[1] for bundle in people
              for ref in _references(bundle) if "?identifier=" in ref}
    for path in files(folder):
        if path.name.startswith(SHARED_FIRST):
            bundle = jsonio.loads(path.read_bytes())
            bundle["entry"] = [e for e in bundle["entry"] if any(
                f"{i.get('system')}|{i.get('value')}" in needed
                for i in e["resource"].get("identifier", []))]
            stored += await _load_bundle(ix, bundle)
    for bundle in people:
        stored += await _load_bundle(ix, bundle)
    return stored


def _references(node: Any) -> list[str]:
    if isinstance(node, list):
        return [r for item in node for r in _references(item)]
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [r for v in node.values() for r in _references(v)]
    return []


async def _load_bundle(ix: Interactions, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    types = {e["fullUrl"]: e["resource"]["resourceType"] for e in bundle["entry"]}
    out: list[dict[str, Any]] = []
    resolved: dict[str, str] = {}
    async with ix.repo.store.unit_of_work() as uow:
        for entry in bundle["entry"]:
            resource = entry["resource"]  # a fresh database: no ifNoneExist can match
            type_ = resource["resourceType"]
            await _rewrite(ix, resource, types, resolved, uow)
            id_ = entry["fullUrl"].removeprefix("urn:uuid:")
            result = await ix.repo.create(type_, {**resource, "id": id_}, uow=uow, id=id_)
            out.append(jsonio.loads(result.version.body))
            out += await _extras(ix, jsonio.loads(result.version.body), uow)
    return out


async def _rewrite(ix: Interactions, node: Any, types: dict[str, str],
                   resolved: dict[str, str], uow: Any) -> None:
    if isinstance(node, list):
        for item in node:
            await _rewrite(ix, item, types, resolved, uow)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("reference")
    if isinstance(ref, str):
        if ref in types:
            node["reference"] = f"{types[ref]}/{ref.removeprefix('urn:uuid:')}"
        elif "?" in ref:
            if ref not in resolved:
                type_, criteria = ref.split("?", 1)
                found = await conditional.find_matches(ix, type_, criteria, uow)
                resolved[ref] = f"{type_}/{found[0].id}" if len(found) == 1 else ref
            node["reference"] = resolved[ref]
    for key, value in node.items():
        if key != "contained":
            await _rewrite(ix, value, types, resolved, uow)


async def _extras(ix: Interactions, resource: dict[str, Any], uow: Any) -> list[dict]:
    """An Appointment for each Encounter, a Coverage for each EOB's contained coverage."""
    made: list[dict[str, Any]] = []
    if resource["resourceType"] == "Encounter" and resource.get("period", {}).get("end"):
        practitioners = [p["individual"] for p in resource.get("participant", [])
                         if p.get("individual", {}).get("reference", "").startswith(
                             "Practitioner/")]
        appointment = {
            "resourceType": "Appointment", "id": f"appt-{resource['id']}",
            "status": "fulfilled", "start": resource["period"]["start"],
            "end": resource["period"]["end"],
            "participant": [{"actor": resource["subject"], "status": "accepted"},
                            *({"actor": p, "status": "accepted"} for p in practitioners)]}
        made.append(appointment)
    if resource["resourceType"] == "ExplanationOfBenefit":
        for contained in resource.get("contained", []):
            if contained.get("resourceType") == "Coverage":
                made.append({**contained, "id": f"cov-{resource['id']}",
                             "beneficiary": resource["patient"]})
    out = []
    for extra in made:
        result = await ix.repo.create(extra["resourceType"], extra, uow=uow, id=extra["id"])
        out.append(jsonio.loads(result.version.body))
    return out
