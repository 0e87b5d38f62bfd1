"""Shared fixtures: a real SQLite file per test, the ASGI app, and an HTTP client on it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.config import Settings

BASE = "http://testserver/fhir"
# MongoDB fixtures (real server or the mongoeco emulator): mongo_url, mongo_app, store_app...
pytest_plugins = ["tests.mongo_fixtures"]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = Path(os.environ.get("FHIRPM_SHARED_DATA", SHARED / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not present: {path} (set FHIRPM_SHARED_DATA)")
    return path


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest, store_kind: str) -> Settings:
    if store_kind == "mongo":  # tests/api and tests/conformance run on both (mongo_fixtures)
        return request.getfixturevalue("mongo_settings")
    return Settings(store_url=f"sqlite:///{tmp_path / 'fhirpm.db'}", base_url=BASE,
                    log_json=False)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    # no periodic job runs unasked (e.g. the slot generator's startup run racing a test's
    # Schedule): tests run jobs with jobs.run_now
    async with application.state.jobs.held(), application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A staff member's client: a real bearer token (`user/*.cruds`, tests.bearer)."""
    from tests.bearer import staff_headers

    transport = httpx.ASGITransport(app=app)
    headers = {"Accept": "application/fhir+json", **await staff_headers(app)}
    async with httpx.AsyncClient(transport=transport, base_url=BASE + "/",
                                 headers=headers) as c:
        yield c


FHIR_JSON = {"Content-Type": "application/fhir+json"}
