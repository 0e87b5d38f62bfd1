"""Which patients a resource belongs to, for the patient entities of its AuditEvents.

The R4 Patient CompartmentDefinition names, per resource type, the search parameters that
link a resource to a patient (Observation: subject, performer; Encounter: patient, ...).
The index entries extracted at write time already hold those parameters' reference
values, so the answer costs no FHIRPath: filter the entries. A Patient belongs to itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from importlib import resources

from fhirpm.search.values import IndexEntry, ReferenceValue


@cache
def patient_params(type: str) -> frozenset[str]:
    """The search parameters linking a `type` resource to the Patient compartment."""
    return frozenset(_compartment().get(type, ()))


@cache
def _compartment() -> dict[str, list[str]]:
    table = resources.files("fhirpm.fhir").joinpath("tables/compartments.json")
    return json.loads(table.read_bytes())["Patient"]


def patients_of(type: str, id: str, entries: Iterable[IndexEntry]) -> tuple[str, ...]:
    """The ids of the patients whose compartment holds `type/id`, in first-seen order."""
    if type == "Patient":
        return (id,)
    params = patient_params(type)
    if not params:
        return ()
    found: dict[str, None] = {}
    for entry in entries:
        value = entry.value
        if (entry.param in params and isinstance(value, ReferenceValue)
                and value.type == "Patient" and value.id):
            found[value.id] = None
    return tuple(found)
