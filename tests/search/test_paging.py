"""Paging never drifts while others write: resources created after the first page never
appear, deleted ones drop out, updated ones appear exactly once, nothing repeats, and
the total stays the first page's."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tests.conftest import BASE, FHIR_JSON
from tests.search.helpers import ids, link, put_all, search


def _next(page: dict) -> str | None:
    url = link(page, "next")
    return url[len(BASE) + 1:] if url else None


def _patients(n: int, start: int = 0) -> list[dict]:
    return [{"resourceType": "Patient", "id": f"p{i:03d}", "gender": "female",
             "birthDate": f"{1900 + i}-01-01"} for i in range(start, start + n)]


async def _walk(client: httpx.AsyncClient, path: str, params: dict,
                between: list) -> tuple[list[str], list[int]]:
    page = await search(client, path, params)
    seen, totals = ids(page), [page["total"]]
    step = 0
    while (nxt := _next(page)) is not None:
        if step < len(between):
            await between[step](client)
        step += 1
        page = await search(client, nxt)
        seen += ids(page)
        totals.append(page["total"])
    return seen, totals


async def test_pages_are_pinned_to_the_first_page(client: httpx.AsyncClient) -> None:
    orders = [({"gender": "female", "_count": "3"}, 7, 8, 1),
              ({"gender": "female", "_count": "3", "_sort": "-birthdate"}, 2, 1, 8),
              ({"_count": "3"}, 7, 8, 1)]
    for params, gone, later, shown in orders:  # ids not yet shown / shown at first
        await put_all(client, _patients(10))

        async def writes(c: httpx.AsyncClient, gone=gone, later=later, shown=shown) -> None:
            await put_all(c, _patients(5, start=100))  # new: never shown
            assert (await c.delete(f"Patient/p{gone:03d}")).status_code == 204
            for i, active in ((later, True), (shown, False)):  # updated: shown once
                changed = {**_patients(1, start=i)[0], "active": active}
                await c.put(f"Patient/p{i:03d}", json=changed, headers=FHIR_JSON)

        seen, totals = await _walk(client, "Patient", params, [writes])
        expected = [f"p{i:03d}" for i in range(10) if i != gone]
        assert sorted(seen) == expected, params
        assert len(seen) == len(set(seen)), params
        assert len(set(totals)) == 1, params  # the first page's total, carried along
        for i in range(100, 105):
            assert (await client.delete(f"Patient/p{i:03d}")).status_code == 204


async def test_previous_pages_stay_put(client: httpx.AsyncClient) -> None:
    await put_all(client, _patients(7))
    first = await search(client, "Patient", {"_count": "3", "_sort": "birthdate"})
    second = await search(client, _next(first))
    await put_all(client, [{"resourceType": "Patient", "id": "early", "gender": "male",
                            "birthDate": "1800-01-01"}])
    back = await search(client, link(second, "previous")[len(BASE) + 1:])
    assert ids(back) == ids(first)  # the newcomer would sort first, but is not in the snapshot
    assert urlsplit(link(back, "self")).query == urlsplit(link(second, "previous")).query
