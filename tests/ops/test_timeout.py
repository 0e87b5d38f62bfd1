"""The request time limit: a request without a response by then is abandoned with a 503
OperationOutcome (issue code timeout); a response that has started may stream on.

Deterministic: the limit's clock is moved by hand and the sweep that enforces it is run
by the test (`Deadlines._expire`, what the sweeper task runs every quarter of the limit),
at points the test reaches through events the handlers set, never by waiting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.ops.conftest import ops_settings, running

LIMIT = 60.0  # never reached in real time during a test: only the hand-moved clock does


class Moved:
    """perf_counter plus an offset the test advances (what requests' `started` is read
    from, so an advance makes every request in flight older)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.perf_counter() + self.offset


class Slow:
    """Handlers that stop where the test wants them: `$stuck` never answers; /stream sends
    its first chunk and waits for `release` before the second."""

    def __init__(self) -> None:
        self.stuck_entered = asyncio.Event()
        self.first_sent = asyncio.Event()
        self.release = asyncio.Event()
        self.finished: list[str] = []

    def install(self, app) -> None:
        async def stuck(ix, req, type_, id_):
            self.stuck_entered.set()
            await asyncio.Event().wait()  # never answers on its own

        app.state.interactions.operations["stuck"] = stuck

        async def stream(request: Request) -> StreamingResponse:
            async def chunks():
                yield b"first,"
                self.first_sent.set()  # the response has started
                await self.release.wait()
                yield b"second"
                self.finished.append("stream")
            return StreamingResponse(chunks(), media_type="text/plain")

        app.router.routes.insert(0, Route("/stream", stream))


async def test_a_stuck_request_is_abandoned_with_503_and_the_server_goes_on(
        tmp_path: Path) -> None:
    slow = Slow()
    settings = ops_settings(tmp_path, request_timeout=LIMIT)
    async with running(settings, setup=slow.install) as (app, client):
        deadlines = app.state.ops.deadlines
        deadlines.clock = clock = Moved()
        stuck = asyncio.create_task(client.get("/fhir/$stuck"))
        await asyncio.wait_for(slow.stuck_entered.wait(), 10)
        assert deadlines._expire() is True  # in flight, not yet due
        assert not stuck.done()
        clock.offset = LIMIT
        deadlines._expire()
        stuck = await asyncio.wait_for(stuck, 10)
        after = await client.get("/fhir/metadata")
        metrics = (await client.get("/metrics")).text
    assert stuck.status_code == 503
    issue = stuck.json()["issue"][0]
    assert issue["code"] == "timeout" and "60 s" in issue["diagnostics"]
    assert stuck.headers["x-request-id"]
    assert after.status_code == 200  # the cancellation did not leak into later requests
    assert "fhirpm_request_timeouts_total 1" in metrics


async def test_a_response_that_has_started_streams_past_the_limit(tmp_path: Path) -> None:
    slow = Slow()
    settings = ops_settings(tmp_path, request_timeout=LIMIT)
    async with running(settings, setup=slow.install) as (app, client):
        deadlines = app.state.ops.deadlines
        deadlines.clock = clock = Moved()
        streamed = asyncio.create_task(client.get("/stream"))
        await asyncio.wait_for(slow.first_sent.wait(), 10)
        clock.offset = LIMIT * 2  # the body outlives the limit
        deadlines._expire()
        slow.release.set()
        streamed = await asyncio.wait_for(streamed, 10)
        metrics = (await client.get("/metrics")).text
    assert streamed.status_code == 200 and streamed.text == "first,second"
    assert slow.finished == ["stream"]
    assert not any(line.startswith("fhirpm_request_timeouts_total ")
                   for line in metrics.splitlines())  # nothing timed out


async def test_no_limit_when_switched_off(tmp_path: Path) -> None:
    slow = Slow()
    slow.release.set()
    settings = ops_settings(tmp_path, request_timeout=0)
    async with running(settings, setup=slow.install) as (app, client):
        assert app.state.ops.deadlines is None
        answer = await client.get("/stream")
    assert answer.text == "first,second"
