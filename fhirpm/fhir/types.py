"""The FHIR R4 (4.0.1) resource types this server serves, and id/reference syntax."""

from __future__ import annotations

import re

import fhirkit

# fhirkit-rs knows exactly the R4 4.0.1 resource types; R4B-only types are not among them.
RESOURCE_TYPES: frozenset[str] = frozenset(fhirkit.RESOURCE_TYPES)

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def is_resource_type(name: str) -> bool:
    return name in RESOURCE_TYPES


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
