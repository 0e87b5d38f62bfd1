"""Property: for generated resources and queries, the SQLite store returns exactly what the
in-memory oracle (`search.match`) returns, in the same order, through every page."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirpm.search.match import MemoryIndex
from fhirpm.search.query import SearchQuery
from fhirpm.storage.port import ResourceStore, ResourceVersion
from fhirpm.storage.sqlite.store import SqliteResourceStore
from tests.search.universe import IDS, PARAMS, clauses, entries, includes, sort_keys

TYPES = tuple(PARAMS)
# Each example opens a fresh database: keep it in memory-backed storage when there is one.
_FAST_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None


@st.composite
def datasets(draw: st.DrawFn) -> list[tuple[str, str, list | None]]:
    """Writes in order: (type, id, entries) or (type, id, None) for a deletion."""
    writes = []
    for type_ in TYPES:
        for id_ in draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True)):
            writes.append((type_, id_, draw(entries(type_))))
    for _ in range(draw(st.integers(0, 3))):  # updates and deletions after the fact
        type_, id_, _ = draw(st.sampled_from(writes))
        writes.append((type_, id_, draw(st.one_of(st.none(), entries(type_)))))
    return writes


@st.composite
def queries(draw: st.DrawFn) -> SearchQuery:
    type_ = draw(st.sampled_from(TYPES))
    where = tuple(draw(st.lists(clauses(type_), max_size=3)))
    fwd, rev = draw(includes(type_)) if draw(st.booleans()) else ((), ())
    count = 100 if fwd or rev else draw(st.integers(1, 4))
    return SearchQuery((type_,), where, draw(sort_keys(type_)), count=count,
                       total="accurate", include=fwd, revinclude=rev)


async def _load(store: ResourceStore, oracle: MemoryIndex,
                writes: list[tuple[str, str, list | None]]) -> None:
    versions: dict[tuple[str, str], int] = {}
    async with store.unit_of_work() as uow:
        for type_, id_, found in writes:
            current = versions.get((type_, id_), 0)
            method = "DELETE" if found is None else ("PUT" if current else "POST")
            body = b"" if found is None else b'{"resourceType":"%s","id":"%s"}' % (
                type_.encode(), id_.encode())
            v = ResourceVersion(type_, id_, current + 1, "2024-01-01T00:00:00.000000Z", method,
                                body)
            await uow.put(v, found or [], expected_version=current)
            versions[(type_, id_)] = current + 1
            if found is None:
                oracle.delete(type_, id_)
            else:
                oracle.put(type_, id_, found)


async def _all_pages(store: ResourceStore, query: SearchQuery) -> tuple[list, int | None]:
    result = await store.search(query)
    seen = [(m.type, m.id) for m in result.matches]
    total = result.total
    pages = 1
    while result.next_cursor:
        result = await store.search(SearchQuery(
            query.types, query.where, query.sort, query.count, query.total,
            cursor=result.next_cursor))
        seen.extend((m.type, m.id) for m in result.matches)
        pages += 1
        assert pages < 100
    return seen, total


def sqlite_store(tmp: Path) -> ResourceStore:
    return SqliteResourceStore(str(tmp / "p.db"), readers=1, synchronous="OFF")


# Every adapter that compiles SearchQuery joins here (the MongoDB adapter: see issue 4).
STORES: dict[str, Callable[[Path], ResourceStore]] = {"sqlite": sqlite_store}


async def _check(writes: list, qs: list[SearchQuery], make: Callable[[Path], ResourceStore]
                 ) -> None:
    with tempfile.TemporaryDirectory(dir=_FAST_TMP) as tmp:
        store = make(Path(tmp))
        await store.open()
        try:
            oracle = MemoryIndex()
            await _load(store, oracle, writes)
            for query in qs:
                expected, expected_included = oracle.search(query)
                got, total = await _all_pages(store, query)
                assert got == expected, query
                assert total == len(expected)
                if query.include or query.revinclude:
                    result = await store.search(query)
                    assert [(v.type, v.id) for v in result.included] == expected_included, query
        finally:
            await store.close()


@pytest.mark.parametrize("store", sorted(STORES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=datasets(), qs=st.lists(queries(), min_size=1, max_size=6))
def test_store_returns_what_the_oracle_returns(store: str, writes: list,
                                               qs: list[SearchQuery]) -> None:
    asyncio.run(_check(writes, qs, STORES[store]))
