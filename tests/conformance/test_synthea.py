"""Synthea ingest through POST [base], the way a client would load it: the hospital and
practitioner batch bundles (conditional creates), then every patient transaction bundle
(urn:uuid fullUrls, conditional references to the shared resources). Counts by type must
equal what the files hold, every reference must end up literal, and loading the shared
bundles again must create nothing through their conditional creates (which now match)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fhirpm.app import create_app
from fhirpm.config import Settings
from fhirpm.fhir import jsonio
from fhirpm.repository.references import holders
from tests.bearer import staff_headers
from tests.conftest import BASE, FHIR_JSON, shared_path
from tests.mongo_fixtures import app_store_url, mongo_is_emulated

SHARED_FIRST = ("hospitalInformation", "practitionerInformation")
MINIMAL = {**FHIR_JSON, "Prefer": "return=minimal"}
RELOADED = 150  # entries from each end of each shared bundle loaded a second time


def synthea_files() -> list[Path]:
    folder = shared_path("fhir", "synthea")
    files = sorted(folder.glob("*.json"))
    return sorted(files, key=lambda p: (not p.name.startswith(SHARED_FIRST), p.name))


@pytest_asyncio.fixture
async def client(tmp_path: Path, request: pytest.FixtureRequest,
                 store_kind: str) -> AsyncIterator[httpx.AsyncClient]:
    if store_kind == "mongo" and mongo_is_emulated():
        pytest.skip("Synthea on MongoDB needs FHIRPM_TEST_MONGODB_URL: the mongoeco emulator "
                    "checks compound unique indexes by scanning the collection on every "
                    "insert, so 7,314 resources take far longer than the whole suite "
                    "(docs/deploy.md)")
    settings = Settings(store_url=app_store_url(request, store_kind, tmp_path / "synthea.db"),
                        base_url=BASE, log_json=False)
    app = create_app(settings)
    async with app.state.jobs.held(), app.router.lifespan_context(app):  # no job runs unasked
        await _skip_without_conditional_matching(app.state.interactions)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE + "/",
                                     timeout=120, headers=await staff_headers(app)) as c:
            yield c


async def _skip_without_conditional_matching(ix: Any) -> None:
    from fhirpm.repository.conditional import find_matches

    try:
        await find_matches(ix, "Patient", "identifier=urn:probe|1", None)
    except NotImplementedError:
        pytest.skip("conditional matching (repository.conditional.find_matches) has not "
                    "landed yet: Synthea uses conditional creates and references")


async def _post(client: httpx.AsyncClient, body: bytes) -> list[str]:
    r = await client.post("", content=body, headers=MINIMAL)
    assert r.status_code == 200, r.text[:2000]
    return [e["response"]["status"] for e in r.json()["entry"]]


async def _all_current(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every stored version, through system history paging (not the audit trail's)."""
    out: list[dict[str, Any]] = []
    url: str | None = "_history?_count=1000"
    while url:
        page = (await client.get(url)).json()
        out += [e["resource"] for e in page.get("entry", []) if "resource" in e
                and e["resource"]["resourceType"] != "AuditEvent"]
        url = next((link["url"] for link in page.get("link", [])
                    if link["relation"] == "next"), None)
    return out


@pytest.mark.slow
async def test_synthea_ingest(client: httpx.AsyncClient) -> None:
    files = synthea_files()
    expected: Counter[str] = Counter()
    for path in files:
        raw = path.read_bytes()
        bundle = jsonio.loads(raw)
        expected.update(e["resource"]["resourceType"] for e in bundle["entry"])
        statuses = await _post(client, raw)
        assert set(statuses) == {"201 Created"}, (path.name, Counter(statuses))
    assert sum(expected.values()) == 7314  # as ../shared/data/fhir/README.md documents

    stored = await _all_current(client)
    assert Counter(r["resourceType"] for r in stored) == expected
    for resource in stored:
        for holder in holders(resource):
            ref = holder["reference"]
            assert not ref.startswith("urn:") and "?" not in ref, (resource["id"], ref)
    ids = {(r["resourceType"], r["id"]) for r in stored}
    encounter = next(r for r in stored if r["resourceType"] == "Encounter")
    practitioner = encounter["participant"][0]["individual"]["reference"].split("/")
    assert tuple(practitioner) in ids  # a conditional reference resolved to a stored one

    # part of the shared bundles again: each conditional create matches and creates
    # nothing; entries without ifNoneExist (PractitionerRole) are plain creates
    again = 0
    for path in files[:2]:
        bundle = jsonio.loads(path.read_bytes())
        bundle["entry"] = bundle["entry"][:RELOADED] + bundle["entry"][-RELOADED:]
        wanted = ["200 OK" if "ifNoneExist" in e["request"] else "201 Created"
                  for e in bundle["entry"]]
        assert "200 OK" in wanted
        assert await _post(client, jsonio.dumps(bundle)) == wanted, path.name
        again += wanted.count("201 Created")
    assert len(await _all_current(client)) == 7314 + again
