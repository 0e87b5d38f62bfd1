"""The request time limit: a request without a response by then is abandoned with a 503
OperationOutcome (issue code timeout); a response that has started may stream on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.ops.conftest import ops_settings, running

LIMIT = 0.2


def install_slow_routes(app, finished: list[str]) -> None:
    async def stuck(ix, req, type_, id_):
        await asyncio.Event().wait()  # never answers on its own

    app.state.interactions.operations["stuck"] = stuck

    async def stream(request: Request) -> StreamingResponse:
        async def chunks():
            yield b"first,"
            await asyncio.sleep(LIMIT * 2)  # the body outlives the limit on purpose
            yield b"second"
            finished.append("stream")
        return StreamingResponse(chunks(), media_type="text/plain")

    app.router.routes.insert(0, Route("/stream", stream))


async def test_a_stuck_request_is_abandoned_with_503_and_the_server_goes_on(
        tmp_path: Path) -> None:
    finished: list[str] = []
    settings = ops_settings(tmp_path, request_timeout=LIMIT)
    async with running(settings, setup=lambda app: install_slow_routes(app, finished)) as (
            _, client):
        loop = asyncio.get_running_loop()
        started = loop.time()
        stuck = await client.get("/fhir/$stuck")
        waited = loop.time() - started
        after = await client.get("/fhir/metadata")
        streamed = await client.get("/stream")
        metrics = (await client.get("/metrics")).text
    assert stuck.status_code == 503
    issue = stuck.json()["issue"][0]
    assert issue["code"] == "timeout" and "0.2 s" in issue["diagnostics"]
    assert stuck.headers["x-request-id"]
    assert LIMIT <= waited < LIMIT * 3  # within a quarter of the limit, plus scheduling
    assert after.status_code == 200  # the cancellation did not leak into later requests
    assert streamed.status_code == 200 and streamed.text == "first,second"
    assert finished == ["stream"]
    assert "fhirpm_request_timeouts_total 1" in metrics


async def test_no_limit_when_switched_off(tmp_path: Path) -> None:
    settings = ops_settings(tmp_path, request_timeout=0)
    async with running(settings, setup=lambda app: install_slow_routes(app, [])) as (
            app, client):
        assert app.state.ops.deadlines is None
        answer = await client.get("/stream")
    assert answer.text == "first,second"
