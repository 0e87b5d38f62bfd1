"""Large transactions validated and indexed ahead in worker processes
(fhirpm.repository.prepare), over HTTP: what is stored, searchable and refused is what
in-process writes give, all-or-nothing holds, and the workers stop with the app, with
`fhirpm serve` on SIGTERM, and by themselves when the server is killed."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bench.server import ServerProcess
from fhirpm.app import create_app
from fhirpm.config import Settings
from fhirpm.repository import prepare
from fhirpm.repository.service import _with_meta
from tests.api.test_bundle import count, post, send, tx
from tests.conftest import BASE

N = prepare.MIN_WRITES + 2 * prepare.CHUNK  # several tasks beyond the in-process first few


WORKERS = {"transaction_workers": 1}  # off by default (Settings.transaction_workers)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=WORKERS)


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Any:
    with ServerProcess.fhirpm(store_url, tmp_path / "server.log", auth=True,
                              env={"FHIRPM_TRANSACTION_WORKERS": "1"}) as running:
        yield running


def _need_workers() -> None:
    if prepare.worker_count() == 0:
        pytest.skip("one core: no worker processes, transactions prepare in-process")


@pytest.fixture
async def pool(app: FastAPI) -> None:
    _need_workers()
    assert await prepare.start(BASE)


def _observation(n: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": "urn:uuid:pat"},
            "effectiveDateTime": f"2024-03-05T10:{n % 60:02d}:00+01:00",
            "valueQuantity": {"value": 72.50, "unit": "kg",
                              "system": "http://unitsofmeasure.org", "code": "kg"}}


def _raw_bundle(n: int) -> bytes:
    """A Patient and `n` Observations referring to it, as bytes: `72.50` stays a decimal
    literal (httpx's json= would send the float 72.5)."""
    observation = (b',{"resource":{"resourceType":"Observation","status":"final",'
                   b'"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},'
                   b'"subject":{"reference":"urn:uuid:pat"},"effectiveDateTime":'
                   b'"2024-03-05T10:%02d:00+01:00","valueQuantity":{"value":72.50,'
                   b'"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}},'
                   b'"request":{"method":"POST","url":"Observation"}}')
    return (b'{"resourceType":"Bundle","type":"transaction","entry":['
            b'{"fullUrl":"urn:uuid:pat","resource":{"resourceType":"Patient","name":'
            b'[{"family":"Chalmers"}]},"request":{"method":"POST","url":"Patient"}}'
            + b"".join(observation % (k % 60) for k in range(n)) + b"]}")


def _bundle(observations: list[dict[str, Any]]) -> dict[str, Any]:
    patient = {"resourceType": "Patient", "name": [{"family": "Chalmers"}]}
    return tx(post(patient, "urn:uuid:pat"), *(post(o) for o in observations))


async def test_workers_results_are_what_the_write_would_compute(app: FastAPI,
                                                                pool: None) -> None:
    """The round trip through a real worker, waited for: the event loop cannot overtake
    it and do the work itself, as it may under load in the tests below."""
    repo = app.state.interactions.repo
    observations = [{**_observation(n), "id": f"o{n}"} for n in range(N)]
    observations[N - 1]["status"] = "not-a-status"
    items = [("Observation", o["id"], o) for o in observations]
    async with prepare.ahead(repo, items) as handed:
        assert handed == N - prepare.FIRST
        prepared = [repo.prepared[id(o)] for o in observations[prepare.FIRST:]]
        await asyncio.wait([asyncio.wrap_future(p._chunk) for p in prepared])
        for ready, observation in zip(prepared, observations[prepare.FIRST:], strict=True):
            stored = _with_meta(observation, observation["id"], 1, "2026-11-28T18:00:00Z")
            errors, entries = await ready.result(repo.indexer, "Observation", stored)
            if observation["status"] == "final":
                assert errors == []
                assert Counter(entries) == Counter(repo.indexer.extract("Observation",
                                                                        stored))
            else:
                assert errors and entries is None
    assert not repo.prepared  # nothing left behind for a later write to pick up


async def test_a_large_transaction_is_prepared_ahead_and_searchable(
        client: httpx.AsyncClient, pool: None) -> None:
    before = prepare.counts["ahead"] + prepare.counts["in-process"]
    raw = _raw_bundle(N)
    response = await client.post("", content=raw,
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert all(e["response"]["status"].startswith("201") for e in entries)
    handed = prepare.counts["ahead"] + prepare.counts["in-process"] - before
    assert handed == N + 1 - prepare.FIRST  # all but the first few went to the pool
    patient = entries[0]["response"]["location"].split("/")[-3]
    found = await client.get("Observation", params={
        "subject": f"Patient/{patient}", "value-quantity": "72.50|http://unitsofmeasure.org|kg",
        "date": "2024-03-05T09:59:00Z", "_summary": "count"})
    assert found.json()["total"] == 1  # 10:59:00+01:00: entry 59 alone
    found = await client.get("Observation", params={"code": "http://loinc.org|29463-7",
                                                     "_lastUpdated": "gt2020",
                                                     "_summary": "count"})
    assert found.json()["total"] == N
    last = entries[-1]["response"]["location"].split("/_history")[0]
    stored = await client.get(last.removeprefix(BASE + "/"))
    assert b'"value":72.50' in stored.content  # the decimal as written, through the workers


async def test_an_invalid_entry_in_a_workers_chunk_fails_the_whole_transaction(
        client: httpx.AsyncClient, pool: None) -> None:
    observations = [_observation(n) for n in range(N)]
    bad_at = N - 3  # well inside a chunk handed to the pool
    observations[bad_at]["status"] = "not-a-status"
    response = await send(client, _bundle(observations))
    assert response.status_code == 400, response.text
    assert f"Bundle.entry[{bad_at + 1}]" in response.text
    assert await count(client, "Observation") == 0
    assert await count(client, "Patient") == 0


async def test_a_killed_worker_leaves_transactions_whole_and_in_process(
        client: httpx.AsyncClient, pool: None) -> None:
    for worker in multiprocessing.active_children():
        worker.kill()
    response = await client.post("", content=_raw_bundle(N),
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    assert await count(client, "Observation") == N
    response = await client.post("", content=_raw_bundle(N),  # the pool is not used again
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    assert await count(client, "Observation") == 2 * N
    assert prepare._failed  # (and the app's shutdown, after this test, does not hang)


async def test_the_workers_stop_when_the_app_stops(settings: Settings) -> None:
    _need_workers()
    app = create_app(settings)
    async with app.state.jobs.held(), app.router.lifespan_context(app):
        assert await prepare.start(BASE)
        workers = [p for p in multiprocessing.active_children() if p.is_alive()]
        assert workers
    assert not [p for p in workers if p.is_alive()]
    assert prepare._pool is None


# -- under `fhirpm serve` -------------------------------------------------------------------


def _workers(pid: int) -> list[int]:
    """The server's worker processes (multiprocessing's spawned children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except OSError:
        return False
    return state != "Z"


def _ingest(server: ServerProcess) -> list[int]:
    """Two large transactions (the first starts the workers); the worker pids."""
    with httpx.Client(base_url=server.base_url + "/fhir/", timeout=60,
                      headers={**server.auth_headers, "Prefer": "return=minimal",
                               "Content-Type": "application/fhir+json"}) as http:
        for _ in range(2):
            answer = http.post("", content=_raw_bundle(N))
            assert answer.status_code == 200, answer.text
    workers = _workers(server.pid)
    assert workers, server.log()
    return workers


def test_serve_stops_its_workers_on_sigterm(server: ServerProcess) -> None:
    _need_workers()
    workers = _ingest(server)
    assert server.stop() in (0, -signal.SIGTERM)
    assert not [pid for pid in workers if _running(pid)]  # joined before the server exited


def test_workers_exit_by_themselves_when_the_server_is_killed(server: ServerProcess) -> None:
    _need_workers()
    workers = _ingest(server)
    server.kill()
    deadline = time.monotonic() + 20
    while [pid for pid in workers if _running(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval: the workers notice their parent's death
    assert not [pid for pid in workers if _running(pid)]
