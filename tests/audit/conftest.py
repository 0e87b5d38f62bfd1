"""Audit fixtures: the whole app on a real SQLite file with the audit trail on, a staff
client, and readers of the stored chain (every event in order, or those a request added)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.audit.recorder import Recorder
from fhirpm.config import Settings
from tests.bearer import bearer, mint, staff_headers
from tests.conftest import BASE, FHIR_JSON

PATIENT = {"resourceType": "Patient", "name": [{"family": "Doe"}]}


def audit_settings(tmp_path: Path, auth: dict[str, Any] | None = None,
                   **audit: Any) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path / 'audit.db'}", base_url=BASE,
                    log_json=False, audit={"enabled": True, **audit}, auth=auth or {})


@pytest.fixture
async def audit_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = create_app(audit_settings(tmp_path))
    # no periodic job runs unasked (tests.conftest.app says why)
    async with app.state.jobs.held(), app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def staff(audit_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(audit_app, await staff_headers(audit_app)) as c:
        yield c


def http_client(app: FastAPI, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE + "/",
                             headers={"Accept": "application/fhir+json", **FHIR_JSON,
                                      **headers})


async def token_client(app: FastAPI, scope: str, **grant: Any) -> httpx.AsyncClient:
    return http_client(app, bearer(await mint(app.state.auth, scope, **grant)))


def recorder(app: FastAPI) -> Recorder:
    found = app.state.interactions.observer
    assert isinstance(found, Recorder)
    return found


async def chain_events(app: FastAPI, after: int = 0) -> list[dict[str, Any]]:
    """The stored AuditEvents after seq `after`, in chain order."""
    return [e async for _, e in recorder(app).trail.events(after=after) if e is not None]


async def head(app: FastAPI) -> int:
    return (await recorder(app).trail.head()).seq


class Watch:
    """The events appended since it was made (`await watch.new()`)."""

    def __init__(self, app: FastAPI, start: int) -> None:
        self.app = app
        self.start = start

    async def new(self) -> list[dict[str, Any]]:
        found = await chain_events(self.app, self.start)
        self.start += len(found)
        return found


async def watch(app: FastAPI) -> Watch:
    return Watch(app, await head(app))


# -- reading an event ------------------------------------------------------------------------


def subtype(event: dict[str, Any]) -> str:
    return event["subtype"][0]["code"]


def patient_of(event: dict[str, Any]) -> str | None:
    found = [e["what"]["reference"] for e in event.get("entity", ())
             if e.get("role", {}).get("code") == "1"]
    assert len(found) <= 1, "BALP: at most one patient per event"
    return found[0] if found else None


def data_refs(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", ())
            if e.get("role", {}).get("code") == "4"]


def query_of(event: dict[str, Any]) -> str | None:
    found = [e["query"] for e in event.get("entity", ()) if "query" in e]
    return base64.b64decode(found[0]).decode() if found else None


def user_of(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """(fhirUser reference, username) of the requesting user agent."""
    for agent in event["agent"]:
        who = agent.get("who", {})
        if agent.get("requestor") and who.get("identifier", {}).get("system") == \
                "urn:fhirpm:username":
            return who.get("reference"), who["identifier"]["value"]
    return None, None


def client_of(event: dict[str, Any]) -> str | None:
    for agent in event["agent"]:
        ident = agent.get("who", {}).get("identifier", {})
        if ident.get("system") == "urn:fhirpm:client-id":
            return ident["value"]
    return None
