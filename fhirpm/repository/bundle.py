"""Batch and transaction bundles (POST [base])."""

from __future__ import annotations

from fhirpm.repository.interactions import Interactions


def install(interactions: Interactions) -> None:
    """Claim POST [base] for bundles."""
