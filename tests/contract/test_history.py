"""Contract: history at instance, type and system level with since, at, count and cursor."""

from __future__ import annotations

from fhirpm.storage.port import HistoryQuery, ResourceStore
from tests.contract.stores import version


def day(n: int) -> str:
    return f"2024-01-{n:02d}T00:00:00.000000Z"


async def _write(store: ResourceStore, v, expected: int) -> None:
    async with store.unit_of_work() as uow:
        await uow.put(v, [], expected_version=expected)


async def seed(store: ResourceStore) -> None:
    """p: v1 day1, v2 day3, deleted day5; q: v1 day2, v2 day4; o (Organization): v1 day6."""
    await _write(store, version("Patient", "p", 1, lu=day(1)), 0)
    await _write(store, version("Patient", "q", 1, lu=day(2)), 0)
    await _write(store, version("Patient", "p", 2, lu=day(3)), 1)
    await _write(store, version("Patient", "q", 2, lu=day(4)), 1)
    await _write(store, version("Patient", "p", 3, lu=day(5), method="DELETE"), 2)
    await _write(store, version("Organization", "o", 1, lu=day(6)), 0)


def ids(versions) -> list[tuple[str, int]]:
    return [(v.id, v.version) for v in versions]


async def test_levels_newest_first(store: ResourceStore) -> None:
    await seed(store)
    instance = await store.history(HistoryQuery("Patient", "p", count=10))
    assert ids(instance) == [("p", 3), ("p", 2), ("p", 1)]
    assert instance[0].deleted and instance[0].body == b""
    typed = await store.history(HistoryQuery("Patient", count=10))
    assert ids(typed) == [("p", 3), ("q", 2), ("p", 2), ("q", 1), ("p", 1)]
    system = await store.history(HistoryQuery(count=10))
    assert ids(system)[0] == ("o", 1) and len(system) == 6
    seqs = [v.seq for v in system]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 6
    assert await store.history_count(HistoryQuery("Patient", "p")) == 3
    assert await store.history_count(HistoryQuery("Patient")) == 5
    assert await store.history_count(HistoryQuery()) == 6
    assert await store.history(HistoryQuery("Patient", "nobody", count=10)) == []


async def test_count_and_cursor_page_through_everything(store: ResourceStore) -> None:
    await seed(store)
    seen: list[tuple[str, int]] = []
    cursor = None
    for _ in range(10):
        page = await store.history(HistoryQuery(count=2, before_seq=cursor))
        if not page:
            break
        assert len(page) <= 2
        seen += [(v.id, v.version) for v in page]
        cursor = page[-1].seq
    assert seen == ids(await store.history(HistoryQuery(count=100)))
    assert await store.history(HistoryQuery(count=0)) == []


async def test_since(store: ResourceStore) -> None:
    await seed(store)
    recent = await store.history(HistoryQuery("Patient", since=day(3), count=10))
    assert ids(recent) == [("p", 3), ("q", 2), ("p", 2)]
    assert await store.history_count(HistoryQuery("Patient", since=day(3))) == 3
    assert await store.history(HistoryQuery(since=day(7), count=10)) == []


async def test_at_gives_the_versions_current_then(store: ResourceStore) -> None:
    await seed(store)
    at3 = await store.history(HistoryQuery("Patient", at=day(3), count=10))
    assert ids(at3) == [("p", 2), ("q", 1)]
    at5 = await store.history(HistoryQuery("Patient", at=day(5), count=10))
    assert ids(at5) == [("p", 3), ("q", 2)]  # the deletion was the current version of p
    assert await store.history_count(HistoryQuery("Patient", at=day(5))) == 2
    instance = await store.history(HistoryQuery("Patient", "q", at=day(3), count=10))
    assert ids(instance) == [("q", 1)]
    assert await store.history(HistoryQuery(at="2023-12-31T00:00:00.000000Z", count=10)) == []
    # combined with the keyset cursor: only versions older than the cursor
    first = await store.history(HistoryQuery(at=day(6), count=1))
    rest = await store.history(HistoryQuery(at=day(6), count=10, before_seq=first[0].seq))
    assert ids(first) == [("o", 1)] and ids(rest) == [("p", 3), ("q", 2)]
