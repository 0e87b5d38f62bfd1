"""Conditional interactions: create (If-None-Exist), update and patch (`Type?criteria`),
delete (single and multiple), and `find_matches`, which transaction bundles use to resolve
conditional references (`Patient?identifier=...`).

Work in progress: the signature of `find_matches` is final; the body lands with search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirpm.repository.interactions import Interactions
    from fhirpm.storage.port import ResourceVersion, UnitOfWork


async def find_matches(ix: Interactions, type: str, criteria: str,
                       uow: UnitOfWork | None) -> list[ResourceVersion]:
    """The current versions of `type` matching `criteria` (a query string without `?`).

    Searches inside `uow` when given (so a transaction sees its own writes). Criteria are
    parsed strictly: an unknown or malformed parameter raises FhirError (400), never
    widens the match. Returns at most 2 versions: enough to tell none, one and several.
    """
    raise NotImplementedError("conditional matching lands with the search issue")
