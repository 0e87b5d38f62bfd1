"""The deadline sweeper lives while requests keep arriving: requests that answer without
ever yielding (a read by id) must not start a sweeper task each."""

from __future__ import annotations

import asyncio

from fhirpm.ops.deadline import Deadlines


class _Request:
    timed_out = False


async def test_one_sweeper_serves_a_run_of_requests_that_never_yield() -> None:
    deadlines = Deadlines(limit=60.0)
    sweepers = set()
    for _ in range(20):
        request = _Request()
        deadlines.start(request)
        deadlines.stop(request)  # answered before the loop ran anything else
        sweepers.add(deadlines._sweeper)
        await asyncio.sleep(0)  # the loop runs the sweeper between requests
    assert len(sweepers) == 1 and None not in sweepers
    await deadlines.close()
    assert deadlines._sweeper is None


async def test_the_sweeper_stops_after_an_idle_interval() -> None:
    deadlines = Deadlines(limit=0.04)  # sweeps every 10 ms
    request = _Request()
    deadlines.start(request)
    deadlines.stop(request)
    sweeper = deadlines._sweeper
    assert sweeper is not None
    await asyncio.wait_for(sweeper, 5.0)  # ends on its own once nothing arrives
    assert deadlines._sweeper is None and not request.timed_out
