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


class Clock:
    """A clock the test moves by hand (what `Exchange.started` and the limit are read from)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_only_the_task_of_an_unanswered_request_past_its_deadline_is_cancelled(
        ) -> None:
    clock = Clock()
    deadlines = Deadlines(60.0, CURRENT, clock=clock)
    release = asyncio.Event()  # everything still running finishes when the test says so
    waiting = {"stuck": asyncio.Event(), "streaming": asyncio.Event()}
    helper_done = asyncio.Event()
    outcomes: dict[str, str] = {}

    async def serve(name: str, answers: bool) -> None:
        request = Exchange("r", "GET", "/fhir/Patient/1", None, "http", clock())
        CURRENT.set(request)
        deadlines.start(request)
        if answers:
            request.status = 200  # the response started: streaming may go on
        if name == "stuck":
            # a task it starts shares its context but serves no request itself
            asyncio.get_running_loop().create_task(helper()).add_done_callback(
                lambda _: helper_done.set())
        waiting[name].set()
        try:
            await release.wait()
            outcomes[name] = "finished"
        except asyncio.CancelledError:
            outcomes[name] = "cancelled, timed out" if request.timed_out else "cancelled"

    async def helper() -> None:
        await release.wait()
        outcomes["helper"] = "finished"

    served = asyncio.gather(serve("stuck", False), serve("streaming", True))
    for event in waiting.values():
        await asyncio.wait_for(event.wait(), 10)
    assert deadlines._expire() is True and not outcomes  # not yet due: nothing cancelled
    clock.now += 61  # past the limit
    deadlines._expire()  # what the sweeper runs every quarter of the limit
    release.set()
    await asyncio.wait_for(served, 10)
    await asyncio.wait_for(helper_done.wait(), 10)
    assert outcomes == {"stuck": "cancelled, timed out", "streaming": "finished",
                        "helper": "finished"}
    await deadlines.close()
