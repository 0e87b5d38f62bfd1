"""The CapabilityStatement, generated from what is registered."""

from __future__ import annotations

from fhirpm.repository.interactions import Interactions


def install(interactions: Interactions) -> None:
    """Serve GET [base]/metadata."""
