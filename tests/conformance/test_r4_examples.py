"""Every official R4 example (../shared/data/fhir/r4-examples) survives the REST life cycle:
create -> read (same JSON but id and server meta) -> update -> history -> delete -> 410.

References to ids that exist nowhere (`Patient/1`) are fine: referential integrity is not
enforced on create. Content is compared after a lossless parse, so decimals such as
`72.50` must come back exactly as sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fhirpm.app import create_app
from fhirpm.config import Settings
from fhirpm.fhir import jsonio
from tests.bearer import staff_headers
from tests.conftest import BASE, FHIR_JSON, SHARED_DATA
from tests.mongo_fixtures import app_store_url

EXAMPLES = SHARED_DATA / "fhir" / "r4-examples"
FILES = sorted(p.name for p in EXAMPLES.glob("*.json") if p.name != "package.json") \
    if EXAMPLES.is_dir() else []
_SERVER_META = ("versionId", "lastUpdated")

@contextlib.asynccontextmanager
async def _serving(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(store_url=store_url, base_url=BASE, log_json=False))
    # one server for the module, which may outlast a job's interval: no timer runs a job
    # over the examples (a hold release, a slot generation) while they are checked
    async with app.state.jobs.held(), app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE + "/",
                                     headers=await staff_headers(app)) as c:
            yield c


# SQLite: one server for the whole module (80 fresh databases would cost more than the tests)
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sqlite_client(tmp_path_factory: pytest.TempPathFactory
                        ) -> AsyncIterator[httpx.AsyncClient]:
    async with _serving(f"sqlite:///{tmp_path_factory.mktemp('examples') / 'fhirpm.db'}") as c:
        yield c


# MongoDB: a database per example. One shared database makes the module quadratic on the
# emulator, which scans its whole history collection on every insert (docs/deploy.md).
@pytest_asyncio.fixture(loop_scope="module")
async def mongo_example_client(request: pytest.FixtureRequest, tmp_path: Path
                               ) -> AsyncIterator[httpx.AsyncClient]:
    async with _serving(app_store_url(request, "mongo", tmp_path / "unused.db")) as c:
        yield c


@pytest.fixture
def client(store_kind: str, request: pytest.FixtureRequest) -> httpx.AsyncClient:
    """The server of this store (tests.mongo_fixtures runs the suite on SQLite and MongoDB)."""
    return request.getfixturevalue("sqlite_client" if store_kind == "sqlite"
                                   else "mongo_example_client")


def content(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without what the server owns: id, meta.versionId, meta.lastUpdated."""
    out = {k: v for k, v in resource.items() if k != "id"}
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in _SERVER_META}
    if meta:
        out["meta"] = meta
    return out


def _example(name: str) -> tuple[bytes, dict[str, Any]]:
    from tests.conftest import shared_path

    raw = shared_path("fhir", "r4-examples", name).read_bytes()
    return raw, jsonio.loads(raw)


def _changed(resource: dict[str, Any]) -> dict[str, Any]:
    """A valid change for any resource type: Resource.language."""
    language = "en-GB" if resource.get("language") != "en-GB" else "en-US"
    return {**resource, "language": language}


@pytest.mark.skipif(not FILES, reason=f"shared examples not present: {EXAMPLES}")
def test_all_80_examples_are_here() -> None:
    assert len(FILES) == 80


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", FILES or ["absent"])
async def test_example_round_trip(client: httpx.AsyncClient, name: str) -> None:
    raw, original = _example(name)
    type = original["resourceType"]
    if type == "AuditEvent":  # append-only: only the server records them (fhirpm.audit)
        refused = await client.post(type, content=raw, headers=FHIR_JSON)
        assert refused.status_code == 405, f"{name}: {refused.text}"
        return
    created = await client.post(type, content=raw, headers=FHIR_JSON)
    assert created.status_code == 201, f"{name}: {created.text}"
    rid = created.json()["id"]

    read = await client.get(f"{type}/{rid}")
    assert read.status_code == 200
    assert content(jsonio.loads(read.content)) == content(original), name

    update = _changed({**jsonio.loads(read.content), "id": rid})
    updated = await client.put(f"{type}/{rid}", content=jsonio.dumps(update), headers=FHIR_JSON)
    assert updated.status_code == 200, f"{name}: {updated.text}"
    assert updated.json()["meta"]["versionId"] == "2"
    assert content(jsonio.loads((await client.get(f"{type}/{rid}")).content)) == content(update)

    history = (await client.get(f"{type}/{rid}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "POST"]
    first = await client.get(f"{type}/{rid}/_history/1")
    assert content(jsonio.loads(first.content)) == content(original)

    assert (await client.delete(f"{type}/{rid}")).status_code == 204
    assert (await client.get(f"{type}/{rid}")).status_code == 410
    history = (await client.get(f"{type}/{rid}/_history")).json()
    assert history["total"] == 3 and history["entry"][0]["request"]["method"] == "DELETE"


