"""SMART Scheduling Links publishing at practice scale: `$bulk-publish` manifest, one
Schedule's Slot file, and an incremental (`_since`) Slot file after a burst of bookings,
through `Interactions.dispatch` as an anonymous caller (access check included; no HTTP).

    .venv/bin/python -m bench publish                      # 50 schedules x 90 days
    .venv/bin/python -m bench publish --schedules 10 --days 14   # a quick run

The store is built once into bench/results/publish-<schedules>x<days>.db through the real
repository (validation, index extraction) and reused by later runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fhirpm.app import build_interactions
from fhirpm.config import SchedulingSettings, Settings
from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.repository.access import Anonymous
from fhirpm.repository.interactions import FhirRequest, Interactions
from fhirpm.scheduling import publish
from fhirpm.storage.factory import store_from_settings

DESCRIPTION = "$bulk-publish manifest, per-Schedule Slot file and _since file latencies"
RESULTS = Path(__file__).resolve().parent / "results"
BASE = "http://bench/fhir"
SLOTS_PER_DAY = 16  # 08:00-16:00 in 30-minute slots
NOBODY = Anonymous(FhirError(Category.UNAUTHORIZED, "no token"))


async def build(ix: Interactions, schedules: int, days: int) -> list[str]:
    repo = ix.repo
    start = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)
    ids = []
    async with repo.unit(None) as unit:
        loc = await repo.create("Location", {"resourceType": "Location", "name": "Main St",
                                             "address": {"state": "MA"}}, uow=unit)
        for _ in range(schedules):
            doc = await repo.create("Practitioner", {"resourceType": "Practitioner"}, uow=unit)
            sched = await repo.create("Schedule", {"resourceType": "Schedule", "actor": [
                {"reference": f"Practitioner/{doc.version.id}"},
                {"reference": f"Location/{loc.version.id}"}]}, uow=unit)
            ids.append(sched.version.id)
    for sid in ids:
        async with repo.unit(None) as unit:
            for day in range(days):
                for k in range(SLOTS_PER_DAY):
                    at = start + timedelta(days=day + 1, minutes=30 * k)
                    await repo.create("Slot", {
                        "resourceType": "Slot", "schedule": {"reference": f"Schedule/{sid}"},
                        "status": "free", "start": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "end": (at + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")},
                        uow=unit)
    return ids


CPU: list[float] = []  # process CPU ms of each `get` (all threads): steadier under load


async def get(ix: Interactions, params: list[tuple[str, str]]) -> tuple[float, bytes]:
    began, cpu = time.perf_counter(), time.process_time()
    answer = await ix.dispatch(FhirRequest("GET", "$bulk-publish", BASE, tuple(params),
                                           principal=NOBODY))
    assert answer.status == 200 and answer.body is not None
    CPU.append((time.process_time() - cpu) * 1000)
    return (time.perf_counter() - began) * 1000, answer.body


def line(name: str, samples: list[float], size: int) -> None:
    samples = sorted(samples)
    cpu = statistics.median(CPU[-len(samples):])
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    print(f"  {name:<28} p50 {statistics.median(samples):7.1f} ms   p95 {p95:7.1f} ms"
          f"   CPU p50 {cpu:7.1f} ms   {size / 1024:8.1f} KiB")


async def run(schedules: int, days: int, runs: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    db = RESULTS / f"publish-{schedules}x{days}.db"
    fresh = not db.exists()
    settings = Settings(store_url=f"sqlite:///{db}", base_url=BASE, log_json=False,
                        scheduling=SchedulingSettings(publish_enabled=True,
                                                      publish_lag_seconds=0))
    store = store_from_settings(settings)
    await store.open()
    try:
        ix = build_interactions(settings, store)
        publish.install(ix, settings.scheduling)
        if fresh:
            began = time.perf_counter()
            await build(ix, schedules, days)
            print(f"built {schedules * days * SLOTS_PER_DAY} slots in "
                  f"{time.perf_counter() - began:.0f} s")
        _, body = await get(ix, [])
        manifest = jsonio.loads(body)
        slot_files = [o["url"].split("?", 1)[1] for o in manifest["output"]
                      if o["type"] == "Slot"]
        print(f"{schedules} schedules x {days} days x {SLOTS_PER_DAY} slots/day, "
              f"{runs} runs")
        timings, size = [], 0
        for _ in range(runs):
            ms, body = await get(ix, [])
            timings.append(ms)
            size = len(body)
        line("manifest", timings, size)
        timings = []
        for n in range(runs):
            query = slot_files[n % len(slot_files)]
            ms, body = await get(ix, [tuple(p.split("=", 1)) for p in query.split("&")])
            timings.append(ms)
            size = len(body)
        line("Slot file (one Schedule)", timings, size)
        since = manifest["transactionTime"]
        await book(ix, 100)
        timings = []
        for _ in range(runs):
            ms, body = await get(ix, [("file", "Slot"), ("_since", since)])
            timings.append(ms)
            size = len(body)
        line("Slot file _since (100 chg)", timings, size)
    finally:
        await store.close()


async def book(ix: Interactions, n: int) -> None:
    """Mark `n` free Slots busy (what bookings do to them), one unit each."""
    from fhirpm.scheduling import lookup

    for version in await lookup.search(ix.repo, "Slot", [("status", "free")], count=n):
        slot = jsonio.loads(version.body)
        await ix.repo.update("Slot", slot["id"], {**slot, "status": "busy"})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench publish", description=DESCRIPTION)
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    asyncio.run(run(args.schedules, args.days, args.runs))
    return 0
