"""MongoDB for tests: a real server when FHIRPM_TEST_MONGODB_URL is set, else the emulator.

The emulator is `mongoeco`'s wire server (in memory), run in a thread with its own event
loop on a free loopback port, once per test session; tests talk to it through the real
PyMongo driver over TCP exactly as they would to MongoDB. Each test gets its own database,
dropped afterwards. Emulator figures and behaviour say nothing about real MongoDB: claims
about MongoDB need a run with FHIRPM_TEST_MONGODB_URL.

Which store a test's app runs on (`store_kind`, read by tests.conftest's `settings`): the
suites in BOTH_STORES run once per store (test ids end in `[sqlite]` / `[mongo]`), every
other suite on SQLite. FHIRPM_TEST_STORE=sqlite|mongo instead puts every such test on that
one store (e.g. `FHIRPM_TEST_STORE=mongo pytest tests/search` by hand).
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
STORES = ("sqlite", "mongo")
# the API and REST conformance suites run on both stores in every `make test`; tests/search
# is not here: on the emulator it takes far too long for CI (README, "Two commands")
BOTH_STORES = ("tests/api", "tests/conformance")
FORCED_STORE = os.environ.get("FHIRPM_TEST_STORE", "")
if FORCED_STORE not in ("", *STORES):
    raise pytest.UsageError(f"FHIRPM_TEST_STORE must be one of {STORES}, not {FORCED_STORE!r}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of the BOTH_STORES suites whose app depends on `store_kind` run once per store."""
    if "store_kind" not in metafunc.fixturenames or FORCED_STORE:
        return
    root = metafunc.config.rootpath
    if any(metafunc.definition.path.is_relative_to(root / suite) for suite in BOTH_STORES):
        metafunc.parametrize("store_kind", STORES, indirect=True)


@pytest.fixture(scope="module")
def store_kind(request: pytest.FixtureRequest) -> str:
    """"sqlite" or "mongo": the store this test's app runs on (see the module docstring).
    Module-scoped so that a module-wide server (tests/conformance) can follow it too."""
    return getattr(request, "param", FORCED_STORE or "sqlite")


def app_store_url(request: pytest.FixtureRequest, store_kind: str, sqlite_file: Path) -> str:
    """The store URL for `store_kind`: the SQLite file, or a fresh MongoDB database dropped
    when `request`'s scope ends (any scope: a module-wide server gets one database)."""
    if store_kind == "sqlite":
        return f"sqlite:///{sqlite_file}"
    server = request.getfixturevalue("mongo_server_url")
    name = f"fhirpm_test_{uuid.uuid4().hex[:12]}"
    request.addfinalizer(lambda: _drop_database(server, name))
    return with_database(server, name)


def _drop_database(server_url: str, name: str) -> None:
    from pymongo import MongoClient

    with MongoClient(server_url, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(name)


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
    name = f"fhirpm_test_{uuid.uuid4().hex[:12]}"
    yield with_database(mongo_server_url, name)
    _drop_database(mongo_server_url, name)


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
    # no periodic job runs unasked (tests.conftest.app says why)
    async with application.state.jobs.held(), application.router.lifespan_context(application):
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
