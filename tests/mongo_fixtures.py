"""MongoDB for tests: a real server when FHIRPM_TEST_MONGODB_URL is set, else the emulator.

The emulator is `mongoeco`'s wire server (in memory), run in a thread with its own event
loop on a free loopback port, once per test session; tests talk to it through the real
PyMongo driver over TCP exactly as they would to MongoDB. Each test gets its own database,
dropped afterwards. Emulator figures and behaviour say nothing about real MongoDB: claims
about MongoDB need a run with FHIRPM_TEST_MONGODB_URL.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.config import Settings

REAL_MONGODB_URL = os.environ.get("FHIRPM_TEST_MONGODB_URL")


class EmulatorThread:
    """mongoeco's AsyncMongoEcoProxyServer serving on 127.0.0.1 from a background thread."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="mongoeco", daemon=True)

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the mongoeco emulator did not start within 60 s")
        if self._error is not None:
            raise RuntimeError(f"the mongoeco emulator failed to start: {self._error}")
        return self.url

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        from mongoeco.wire import AsyncMongoEcoProxyServer

        self._stop = asyncio.Event()
        async with AsyncMongoEcoProxyServer(host="127.0.0.1", port=0) as server:
            address = server.address
            self.url = f"mongodb://{address.host}:{address.port}/?directConnection=true"
            self._ready.set()
            await self._stop.wait()


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` (replacing any database in its path)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def mongo_server_url() -> Iterator[str]:
    """The MongoDB server URL for this test session (real, or the emulator)."""
    if REAL_MONGODB_URL:
        yield REAL_MONGODB_URL
        return
    try:
        import mongoeco.wire  # noqa: F401
    except ImportError:
        pytest.skip("mongoeco (the MongoDB emulator, Python >= 3.13) is not installed and "
                    "FHIRPM_TEST_MONGODB_URL is not set")
    emulator = EmulatorThread()
    yield emulator.start()
    emulator.stop()


def mongo_is_emulated() -> bool:
    return not REAL_MONGODB_URL


@pytest.fixture
def mongo_url(mongo_server_url: str) -> Iterator[str]:
    """A URL naming a fresh database of its own, dropped after the test."""
    from pymongo import MongoClient

    name = f"fhirpm_test_{uuid.uuid4().hex[:12]}"
    yield with_database(mongo_server_url, name)
    with MongoClient(mongo_server_url, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(name)


@pytest.fixture
def mongo_settings(mongo_url: str) -> Settings:
    from tests.conftest import BASE

    return Settings(store_url=mongo_url, base_url=BASE, log_json=False)


@pytest.fixture(params=["sqlite", "mongo"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for each store in turn: use it (or `store_app`/`store_client`) to run an API
    test on both stores."""
    from tests.conftest import BASE

    if request.param == "sqlite":
        return Settings(store_url=f"sqlite:///{tmp_path / 'fhirpm.db'}", base_url=BASE,
                        log_json=False)
    return request.getfixturevalue("mongo_settings")


async def _started(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def mongo_app(mongo_settings: Settings) -> AsyncIterator[FastAPI]:
    """The whole app on a MongoDB store (real or emulated)."""
    async for application in _started(mongo_settings):
        yield application


@pytest.fixture
async def store_app(store_settings: Settings) -> AsyncIterator[FastAPI]:
    async for application in _started(store_settings):
        yield application


async def _client(application: FastAPI) -> httpx.AsyncClient:
    """A staff member's client (a real bearer token, tests.bearer)."""
    from tests.bearer import staff_headers
    from tests.conftest import BASE

    headers = {"Accept": "application/fhir+json", **await staff_headers(application)}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                             base_url=BASE + "/", headers=headers)


@pytest.fixture
async def mongo_client(mongo_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(mongo_app) as c:
        yield c


@pytest.fixture
async def store_client(store_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(store_app) as c:
        yield c
