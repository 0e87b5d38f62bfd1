"""The deadline sweeper: it lives while requests keep arriving (requests that answer
without ever yielding, such as a read by id, must not start a sweeper task each), and it
cancels exactly the tasks serving a request that has no response by its deadline."""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar

from fhirpm.ops.context import Exchange
from fhirpm.ops.deadline import Deadlines

CURRENT: ContextVar[Exchange | None] = ContextVar("test_exchange", default=None)


def _request() -> Exchange:
    return Exchange("r", "GET", "/fhir/Patient/1", None, "http", time.perf_counter())


async def test_one_sweeper_serves_a_run_of_requests_that_never_yield() -> None:
    deadlines = Deadlines(60.0, CURRENT)
    sweepers = set()
    for _ in range(20):
        request = _request()
        deadlines.start(request)
        request.status = 200  # answered before the loop ran anything else
        sweepers.add(deadlines._sweeper)
        await asyncio.sleep(0)  # the loop runs the sweeper between requests
    assert len(sweepers) == 1 and None not in sweepers
    await deadlines.close()
    assert deadlines._sweeper is None


async def test_the_sweeper_stops_after_an_idle_interval() -> None:
    deadlines = Deadlines(0.04, CURRENT)  # sweeps every 10 ms
    request = _request()
    deadlines.start(request)
    request.status = 200
    sweeper = deadlines._sweeper
    assert sweeper is not None
    await asyncio.wait_for(sweeper, 5.0)  # ends on its own once nothing arrives
    assert deadlines._sweeper is None and not request.timed_out


async def test_only_the_task_of_an_unanswered_request_past_its_deadline_is_cancelled(
        ) -> None:
    deadlines = Deadlines(0.04, CURRENT)
    helper_done = asyncio.Event()
    outcomes: dict[str, str] = {}

    async def serve(name: str, answers: bool) -> None:
        request = _request()
        CURRENT.set(request)
        deadlines.start(request)
        if answers:
            request.status = 200  # the response started: streaming may go on
        if name == "stuck":
            # a task it starts shares its context but serves no request itself
            asyncio.get_running_loop().create_task(helper()).add_done_callback(
                lambda _: helper_done.set())
        try:
            await asyncio.sleep(0.5)
            outcomes[name] = "finished"
        except asyncio.CancelledError:
            outcomes[name] = "cancelled, timed out" if request.timed_out else "cancelled"

    async def helper() -> None:
        await asyncio.sleep(0.3)
        outcomes["helper"] = "finished"

    await asyncio.gather(serve("stuck", False), serve("streaming", True))
    await asyncio.wait_for(helper_done.wait(), 5.0)
    assert outcomes == {"stuck": "cancelled, timed out", "streaming": "finished",
                        "helper": "finished"}
    await deadlines.close()
