"""The contract suite's `store` fixture: every test runs once per store (sqlite, mongo).

`open_store()` opens a second store on the same data (another server process, as far as
the data is concerned) for concurrency tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fhirpm.storage.port import ResourceStore
from tests.contract.stores import STORES, make_store

Opener = Callable[..., Awaitable[ResourceStore]]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("mongo_url") if store_kind == "mongo" else None


@pytest.fixture
async def open_store(store_kind: str, store_url: str | None,
                     tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[ResourceStore] = []

    async def opener(**kwargs: object) -> ResourceStore:
        store = make_store(store_kind, tmp_path, store_url, **kwargs)
        await store.open()
        opened.append(store)
        return store

    yield opener
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_store: Opener) -> ResourceStore:
    return await open_store()
