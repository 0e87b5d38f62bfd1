"""Ops fixtures: the real app (SQLite file per test) with chosen ops settings, an HTTP
client on it, and a settable clock for the rate limiter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.config import AuthSettings, OpsSettings, Settings

ORIGIN = "http://testserver"
BASE = ORIGIN + "/fhir"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
FAST_AUTH = {"argon2_time_cost": 1, "argon2_memory_kib": 64}


class Clock:
    """A clock tests move by hand (the rate limiter and CORS cache read it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ops_settings(tmp_path: Path, *, auth: dict[str, Any] | None = None,
                 **ops: Any) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path / 'ops.db'}", base_url=BASE,
                    log_json=False, ops=OpsSettings(**ops),
                    auth=AuthSettings(**{**FAST_AUTH, **(auth or {})}))


@asynccontextmanager
async def running(settings: Settings, *, client_ip: str = "127.0.0.1",
                  setup: Callable[[FastAPI], None] | None = None
                  ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app started (lifespan), and a client whose connections come from `client_ip`,
    carrying a staff member's bearer token (tests.bearer)."""
    from tests.bearer import staff_headers

    app = create_app(settings)
    if setup is not None:
        setup(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN,
                                     headers=await staff_headers(app)) as client:
            yield app, client
