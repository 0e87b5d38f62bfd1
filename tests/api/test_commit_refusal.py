"""A store that refuses at commit (MongoDB when another writer won) yields 409, not 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from fhirpm.app import create_app
from fhirpm.config import Settings
from fhirpm.storage.port import StoreError, VersionConflict
from fhirpm.storage.sqlite import SqliteResourceStore
from tests.bearer import staff_headers
from tests.conftest import BASE, FHIR_JSON


class RefusingStore(SqliteResourceStore):
    """A real SQLite store whose commits are refused the way a losing MongoDB commit is:
    the unit's writes are rolled back and the store raises when the unit closes."""

    refusal: Exception = VersionConflict("another writer committed first")

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator:
        class Refused(Exception):
            pass

        try:
            async with super().unit_of_work() as uow:
                yield uow
                raise Refused  # roll the unit back instead of committing it
        except Refused:
            raise self.refusal from None


async def _post(tmp_path: Path, refusal: Exception) -> httpx.Response:
    store = RefusingStore(str(tmp_path / "refusing.db"))
    store.refusal = refusal
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path / 'refusing.db'}",
                              base_url=BASE, log_json=False), store=store)
    async with app.router.lifespan_context(app):
        headers = {**FHIR_JSON, **await staff_headers(app)}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE + "/") as client:
            response = await client.post("Patient", json={"resourceType": "Patient"},
                                         headers=headers)
            listed = await client.get("Patient", headers=headers)
    assert listed.json().get("total", len(listed.json().get("entry", []))) == 0
    return response


async def test_conflict_at_commit_is_409(tmp_path: Path) -> None:
    r = await _post(tmp_path, VersionConflict("another writer committed first"))
    assert r.status_code == 409
    assert r.json()["issue"][0]["code"] == "conflict"


async def test_store_failure_at_commit_is_503(tmp_path: Path) -> None:
    r = await _post(tmp_path, StoreError("connection lost"))
    assert r.status_code == 503
    assert r.json()["resourceType"] == "OperationOutcome"
