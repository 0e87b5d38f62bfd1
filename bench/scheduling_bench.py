"""Scheduling: `Appointment/$find` latency over 50 practitioners x 90 days of Slots, and
`$book` throughput under concurrency, through `Interactions.dispatch` (the operation, the
searches and the write rule; no HTTP), on SQLite.

    .venv/bin/python -m bench scheduling                  # build once (a minute), measure
    .venv/bin/python -m bench scheduling --runs 500       # more samples per query
    .venv/bin/python -m bench scheduling --practitioners 10 --days 30   # a quick run

The practice: 5 Locations (Europe/Berlin), 50 Practitioners with a PractitionerRole each
(Mon-Fri 09:00-12:00 and 13:00-17:00), one Schedule each (20-minute slots; every fifth
one offers virtual visits), Slots made by the real generator (`slots.generate`) over 90
days, and one Slot in ten booked through the write rule. The database is built once into
bench/results/scheduling-<practitioners>x<days>.db and copied for each run (bookings change
it). Target (issue 6): $find p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fhirpm.config import SchedulingSettings, Settings
from fhirpm.fhir import jsonio
from fhirpm.jobs import Jobs
from fhirpm.repository.interactions import FhirRequest, Interactions
from fhirpm.scheduling import install, model, slots
from fhirpm.storage.sqlite.store import SqliteResourceStore

DESCRIPTION = "Scheduling: $find p50/p95 over 50 practitioners x 90 days; $book throughput"
RESULTS = Path(__file__).resolve().parent / "results"
BASE = "http://bench/fhir"
FIRST = date(2027, 1, 4)  # a Monday
SEED = 20270104
LOCATIONS = 5
GP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-type",
                  "code": "124", "display": "General Practice"}]}
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def _interactions(path: Path) -> tuple[Interactions, SqliteResourceStore]:
    from fhirpm.app import build_interactions

    settings = Settings(store_url=f"sqlite:///{path}", base_url=BASE, log_json=False)
    store = SqliteResourceStore(str(path))
    ix = build_interactions(settings, store)
    install(ix, Jobs(store), settings)
    return ix, store


async def _dispatch(ix: Interactions, method: str, path: str,
                    params: list[tuple[str, str]] | None = None,
                    body: dict[str, Any] | None = None) -> Any:
    req = FhirRequest(method, path, BASE, tuple(params or ()),
                      {"content-type": "application/fhir+json"},
                      jsonio.dumps(body) if body is not None else None)
    return await ix.dispatch(req)


# -- the practice --------------------------------------------------------------------------


async def build(path: Path, practitioners: int, days: int) -> None:
    ix, store = _interactions(path)
    await store.open()
    try:
        repo = ix.repo
        for n in range(LOCATIONS):
            await repo.update("Location", f"loc{n}", {
                "resourceType": "Location", "id": f"loc{n}", "name": f"Site {n}",
                "extension": [{"url": model.TIMEZONE, "valueCode": "Europe/Berlin"}]})
        for n in range(practitioners):
            await _practitioner(repo, n)
        settings = SchedulingSettings()
        started = time.perf_counter()
        made = 0
        for n in range(practitioners):
            counts = await slots.generate(repo, f"sch{n}", FIRST, FIRST + timedelta(days=days - 1),
                                          settings)
            made += counts.created
        print(f"  {made} slots generated in {time.perf_counter() - started:.1f} s "
              f"({(time.perf_counter() - started) / max(made, 1) * 1e6:.0f} us per slot)")
        await _book_some(ix, made)
    finally:
        await store.close()


async def _practitioner(repo: Any, n: int) -> None:
    await repo.update("Practitioner", f"dr{n}", {"resourceType": "Practitioner",
                                                  "id": f"dr{n}",
                                                  "name": [{"family": f"Doctor{n}"}]})
    await repo.update("PractitionerRole", f"role{n}", {
        "resourceType": "PractitionerRole", "id": f"role{n}",
        "practitioner": {"reference": f"Practitioner/dr{n}"},
        "location": [{"reference": f"Location/loc{n % LOCATIONS}"}],
        "availableTime": [
            {"daysOfWeek": WEEKDAYS, "availableStartTime": "09:00:00",
             "availableEndTime": "12:00:00"},
            {"daysOfWeek": WEEKDAYS, "availableStartTime": "13:00:00",
             "availableEndTime": "17:00:00"}]})
    service = [GP, {"coding": [model.VIRTUAL]}] if n % 5 == 0 else [GP]
    await repo.update("Schedule", f"sch{n}", {
        "resourceType": "Schedule", "id": f"sch{n}", "active": True, "serviceType": service,
        "extension": [{"url": model.SLOT_LENGTH, "valueDuration": {
            "value": 20, "unit": "min", "system": "http://unitsofmeasure.org",
            "code": "min"}}],
        "actor": [{"reference": f"PractitionerRole/role{n}"}]})


async def _book_some(ix: Interactions, total: int) -> None:
    """One Slot in ten booked by a plain Appointment create (the write rule takes it)."""
    rng = random.Random(SEED)
    found = await ix.repo.store.search(_all_slots_query(ix))
    picked = [v.id for v in found.matches if rng.random() < 0.1]
    started = time.perf_counter()
    for n, slot_id in enumerate(picked):
        await ix.repo.create("Appointment", {
            "resourceType": "Appointment", "status": "booked",
            "slot": [{"reference": f"Slot/{slot_id}"}],
            "participant": [{"actor": {"reference": f"Patient/p{n}"}, "status": "accepted"}]})
    print(f"  {len(picked)} slots booked in {time.perf_counter() - started:.1f} s")


def _all_slots_query(ix: Interactions) -> Any:
    from fhirpm.search.parse import SearchParser

    parser = SearchParser(ix.repo.registry, max_count=1_000_000)
    return parser.parse(["Slot"], [("_count", "1000000")]).query


# -- measurements ------------------------------------------------------------------------------


def _queries(practitioners: int, days: int) -> dict[str, Callable[[random.Random],
                                                                  list[tuple[str, str]]]]:
    def window(rng: random.Random, length: int) -> list[tuple[str, str]]:
        day = FIRST + timedelta(days=rng.randrange(max(days - length, 1)))
        return [("start", f"{day}T00:00:00+01:00"),
                ("end", f"{day + timedelta(days=length)}T00:00:00+01:00")]

    return {
        "practitioner, 7 days": lambda r: [
            ("practitioner", f"Practitioner/dr{r.randrange(practitioners)}"), *window(r, 7)],
        "location, 1 day": lambda r: [
            ("location", f"Location/loc{r.randrange(LOCATIONS)}"), *window(r, 1)],
        "virtual, any, 14 days": lambda r: [("visit-type", "virtual"), *window(r, 14)],
        "service-type, any, 2 days": lambda r: [
            ("service-type", "http://terminology.hl7.org/CodeSystem/service-type|124"),
            *window(r, 2)],
        "practitioner, 60 min, 7 days": lambda r: [
            ("practitioner", f"Practitioner/dr{r.randrange(practitioners)}"),
            ("duration", "60"), *window(r, 7)],
    }


async def measure_find(ix: Interactions, practitioners: int, days: int, runs: int,
                       count: int | None) -> dict[str, tuple[list[float], list[float], int]]:
    """Per query: (wall ms, process CPU ms, proposals returned in all)."""
    rng = random.Random(SEED + 1)
    out: dict[str, tuple[list[float], list[float], int]] = {}
    for name, make in _queries(practitioners, days).items():
        wall: list[float] = []
        cpu: list[float] = []
        returned = 0
        for n in range(runs + 10):
            params = make(rng) + ([("_count", str(count))] if count else [])
            started, started_cpu = time.perf_counter(), time.process_time()
            response = await _dispatch(ix, "GET", "Appointment/$find", params)
            elapsed = time.perf_counter() - started
            used = time.process_time() - started_cpu
            if response.status != 200:
                raise SystemExit(f"$find {params} answered {response.status}")
            if n >= 10:  # warm-up left out
                wall.append(elapsed * 1000)
                cpu.append(used * 1000)
                returned += len(jsonio.loads(response.body).get("entry", ()))
        out[name] = (wall, cpu, returned)
    return out


async def measure_book(ix: Interactions, workers: int, bookings: int,
                       days: int) -> tuple[float, int, int]:
    """Distinct free slots booked by `workers` concurrent tasks: (bookings/s, ok, 409s)."""
    rng = random.Random(SEED + 2)
    free: list[dict[str, Any]] = []
    while len(free) < bookings:
        day = FIRST + timedelta(days=rng.randrange(days))
        r = await _dispatch(ix, "GET", "Appointment/$find", [
            ("start", f"{day}T00:00:00+01:00"), ("end", f"{day}T23:59:00+01:00"),
            ("_count", "100")])
        free += [e["resource"] for e in jsonio.loads(r.body).get("entry", [])]
    queue = list(enumerate(free[:bookings]))
    counts = {201: 0, 409: 0}

    async def worker() -> None:
        while queue:
            n, proposal = queue.pop()
            r = await _book(ix, proposal, f"Patient/b{n}")
            counts[r.status] = counts.get(r.status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    return bookings / elapsed, counts[201], counts[409]


async def measure_contention(ix: Interactions, racers: int) -> tuple[float, list[int]]:
    """`racers` concurrent $book of one Slot: (seconds for all, sorted statuses)."""
    r = await _dispatch(ix, "GET", "Appointment/$find", [
        ("start", f"{FIRST + timedelta(days=2)}T00:00:00+01:00"),
        ("end", f"{FIRST + timedelta(days=3)}T00:00:00+01:00"), ("_count", "1")])
    proposal = jsonio.loads(r.body)["entry"][0]["resource"]
    started = time.perf_counter()
    answers = await asyncio.gather(*(_book(ix, proposal, f"Patient/r{n}")
                                     for n in range(racers)))
    return time.perf_counter() - started, sorted(a.status for a in answers)


async def _book(ix: Interactions, proposal: dict[str, Any], patient: str) -> Any:
    from fhirpm.errors import FhirError

    body = {"resourceType": "Parameters", "parameter": [
        {"name": "appointment", "resource": proposal},
        {"name": "patient", "valueReference": {"reference": patient}}]}
    try:
        return await _dispatch(ix, "POST", "Appointment/$book", body=body)
    except FhirError as err:  # what the HTTP edge renders as an OperationOutcome
        return type("Answer", (), {"status": err.status})()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> int:
    RESULTS.mkdir(exist_ok=True)
    cached = RESULTS / f"scheduling-{args.practitioners}x{args.days}.db"
    if not cached.exists() or args.rebuild:
        print(f"building {cached.name} ...", flush=True)
        partial = cached.with_suffix(".partial")
        for leftover in RESULTS.glob(partial.name + "*"):
            leftover.unlink()
        await build(partial, args.practitioners, args.days)
        os.replace(partial, cached)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        shutil.copy(cached, db)
        ix, store = _interactions(db)
        await store.open()
        try:
            slots_total = (await store.search(_all_slots_query(ix))).matches
            print(f"{args.practitioners} practitioners x {args.days} days: "
                  f"{len(slots_total)} slots; load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} CPUs")
            for count in args.count:
                print(f"$find, _count={count or 'default'}, {args.runs} runs per query "
                      "(ms, in-process dispatch; CPU = the process's, all threads)")
                found = await measure_find(ix, args.practitioners, args.days, args.runs,
                                           count)
                worst = 0.0
                for name, (wall, cpu, returned) in found.items():
                    p95 = _pct(wall, 0.95)
                    worst = max(worst, p95)
                    print(f"  {name:<30} p50 {statistics.median(wall):6.1f}  p95 {p95:6.1f}"
                          f"  p99 {_pct(wall, 0.99):6.1f}  CPU p50 "
                          f"{statistics.median(cpu):5.1f} p95 {_pct(cpu, 0.95):5.1f}  "
                          f"({returned / len(wall):.0f} proposals)")
                print(f"  worst p95 {worst:.1f} ms (target <= 50): "
                      f"{'met' if worst <= 50 else 'NOT met'}")
            rate, ok, lost = await measure_book(ix, args.workers, args.bookings, args.days)
            print(f"$book, {args.workers} concurrent clients, {args.bookings} distinct "
                  f"slots: {rate:.0f} bookings/s ({ok} booked, {lost} conflicts)")
            seconds, statuses = await measure_contention(ix, 50)
            print(f"$book, 50 concurrent on one slot: {statuses.count(201)} booked, "
                  f"{statuses.count(409)} x 409, all answered in {seconds * 1000:.0f} ms")
        finally:
            await store.close()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scheduling",
                                     description=DESCRIPTION)
    parser.add_argument("--practitioners", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--bookings", type=int, default=500)
    parser.add_argument("--count", type=int, nargs="*", default=[0, 20],
                        help="_count values to measure $find with (0: the default)")
    parser.add_argument("--rebuild", action="store_true")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
