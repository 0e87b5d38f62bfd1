"""Searches the scheduling modules run for themselves, through the repository's own search
(parser, registry, store indexes): never a scan. Parameters are the FHIR search parameters
a client would send, so every lookup here is a query the EXPLAIN tests already cover."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fhirpm.search.parse import SearchParser
from fhirpm.search.query import DatePred, Param

if TYPE_CHECKING:
    from fhirpm.repository.service import Repository
    from fhirpm.search.query import Clause
    from fhirpm.storage.port import ResourceVersion, UnitOfWork

PAGE = 500
# The longest piece of time one Slot search covers: the store's planner materialises a
# driver of up to 2,000 index rows (sqlite PROBE_CAP), and a day of a practice holds fewer
# Slots than that up to ~95 practitioners at 20-minute slots. A search over a longer
# window in one range (or by Schedule, whose Slots pile up with the years) would have no
# small driver and read every Slot of the type.
PIECE = timedelta(days=1)


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


async def few(repo: Repository, type: str, params: Sequence[tuple[str, str]]) -> bool:
    """Whether `params` match few enough resources to drive a search alone (an estimated
    count, which the store gives only below its cap: one index-only probe)."""
    parser = SearchParser(repo.registry)
    query = parser.parse([type], [*params, ("_count", "0"), ("_total", "estimate")],
                         strict=True).query
    return (await repo.store.search(query)).total is not None


def starts_within(start: datetime, end: datetime) -> Param:
    """Slot.start in [start, end): one bounded `eq` range (inclusive epoch microseconds)."""
    lo = int(start.timestamp() * 1_000_000)
    hi = int(end.timestamp() * 1_000_000) - 1
    return Param("start", "date", (DatePred("eq", lo, hi),))


async def slots_starting(repo: Repository, params: Sequence[tuple[str, str]],
                         start: datetime, end: datetime) -> list[ResourceVersion]:
    """Every Slot matching `params` that starts in [start, end), searched in PIECEs (in
    one search when `params` alone match few)."""
    found: list[ResourceVersion] = []
    whole = bool(params) and await few(repo, "Slot", params)
    while start < end:
        piece_end = end if whole else min(start + PIECE, end)
        found += await search(repo, "Slot", params, everything=True,
                              extra=(starts_within(start, piece_end),))
        start = piece_end
    return found
