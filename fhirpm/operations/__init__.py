"""FHIR operations ($validate, ...): one module per operation, registered by name."""

from __future__ import annotations

from fhirpm.repository.interactions import Interactions


def install(interactions: Interactions) -> None:
    """Register every operation with the interactions router."""
    from fhirpm.operations import validate
    from fhirpm.operations.registry import register

    register(interactions, validate.SPEC)
