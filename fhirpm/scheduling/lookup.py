"""Searches the scheduling modules run for themselves, through the repository's own search
(parser, registry, store indexes): never a scan. Parameters are the FHIR search parameters
a client would send, so every lookup here is a query the EXPLAIN tests already cover."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from fhirpm.search.parse import SearchParser

if TYPE_CHECKING:
    from fhirpm.repository.service import Repository
    from fhirpm.search.query import Clause
    from fhirpm.storage.port import ResourceVersion, UnitOfWork

PAGE = 500


async def search(repo: Repository, type: str, params: Sequence[tuple[str, str]], *,
                 count: int = PAGE, unit: UnitOfWork | None = None,
                 everything: bool = False, extra: Sequence[Clause] = ()
                 ) -> list[ResourceVersion]:
    """Resources of `type` matching `params` and the `extra` clauses (a bad parameter is a
    400, never ignored): the first `count`, or with `everything` every page."""
    parser = SearchParser(repo.registry, max_count=max(count, PAGE))
    params = [*params, ("_count", str(count)), ("_total", "none")]
    query = parser.parse([type], params, strict=True, extra=extra).query
    found: list[ResourceVersion] = []
    while True:
        result = await (unit.search(query) if unit is not None else repo.store.search(query))
        found.extend(result.matches)
        if not everything or not result.next_cursor:
            return found
        query = replace(query, cursor=result.next_cursor)
