"""Search latency at practice scale: 100k Patients, 300k Appointments and 1M Observations
(generated from a fixed seed), a fixed query mix through `Interactions.dispatch` (parse,
plan, SQL, searchset Bundle; no HTTP), p50/p95/p99 per query and per class.

    .venv/bin/python -m bench search                 # build once (minutes), then measure
    .venv/bin/python -m bench search --runs 300      # more samples
    .venv/bin/python -m bench search --scale 0.05    # a quick, small run

The database is built once into bench/results/search-<sizes>-<seed>.db (index entries come
from the real `RegistryIndexer`, computed in a process pool) and reused by later runs.
Targets (issue 3): p95 <= 25 ms for single indexed parameters, <= 60 ms for two parameters
with `_include`; counting >= 1M matches in < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fhirpm.config import Settings
from fhirpm.fhir import jsonio
from fhirpm.repository.interactions import FhirRequest, Interactions
from fhirpm.search import values
from fhirpm.search.dates import date_range
from fhirpm.search.normalize import decimal_bounds
from fhirpm.search.values import IndexEntry
from fhirpm.storage.sqlite import index
from fhirpm.storage.sqlite.store import SqliteResourceStore

DESCRIPTION = "Search p50/p95/p99 over 100k Patients + 300k Appointments; count of 1M matches"
RESULTS = Path(__file__).resolve().parent / "results"
BASE = "http://bench/fhir"
SEED = 20240601
STAMP = "2025-01-01T00:00:00.000000Z"
PRACTITIONERS, LOCATIONS = 200, 20
FAMILIES = [a + b for a in ("Smi", "Joh", "Wil", "Bro", "Jon", "Gar", "Mil", "Dav", "Rod",
                            "Mar", "Her", "Lop", "Gon", "And", "Tho", "Tay", "Moo", "Jac",
                            "Whi", "Har", "San", "Cla", "Ram", "Lew", "Rob")
            for b in ("th", "nson", "liams", "wn", "es", "cia", "ler", "is", "riguez",
                      "tinez", "nandez", "ez", "zalez", "erson", "mas", "lor", "re", "kson",
                      "te", "ris")]
GIVEN = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
         "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
         "Thomas", "Sarah", "Charles", "Karen", "Renée", "José", "Zoë", "Anaïs", "Łukasz"]
STATUSES = ["booked"] * 8 + ["fulfilled"] * 9 + ["cancelled"] * 2 + ["noshow"]
SERVICES = ["185349003", "390906007", "308335008", "11429006", "185345009"]
START = datetime(2024, 1, 1, tzinfo=UTC)


# -- generation (deterministic per index) ----------------------------------------------------


def _rng(kind: int, i: int) -> random.Random:
    return random.Random(SEED * 7919 + kind * 1_000_003 + i)


def patient(i: int) -> dict[str, Any]:
    r = _rng(1, i)
    born = datetime(1930, 1, 1) + timedelta(days=r.randrange(90 * 365))
    return {"resourceType": "Patient", "id": f"p{i}",
            "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1",
                            "type": {"coding": [{"system": "http://terminology.hl7.org/"
                                                 "CodeSystem/v2-0203", "code": "MR"}]},
                            "value": f"MRN{i:07d}"}],
            "active": True,
            "name": [{"use": "official", "family": r.choice(FAMILIES),
                      "given": [r.choice(GIVEN), r.choice(GIVEN)]}],
            "telecom": [{"system": "phone", "value": f"555-{r.randrange(10**7):07d}"}],
            "gender": r.choice(["male", "female"]), "birthDate": born.date().isoformat(),
            "address": [{"line": [f"{r.randrange(1, 999)} Main St"], "city": "Springfield",
                         "state": "MA", "postalCode": f"01{r.randrange(1000):03d}"}],
            "generalPractitioner": [{"reference": f"Practitioner/dr{r.randrange(PRACTITIONERS)}"}],
            "managingOrganization": {"reference": "Organization/clinic"}}


def appointment(i: int, patients: int) -> dict[str, Any]:
    r = _rng(2, i)
    day = START + timedelta(days=r.randrange(730))
    start = day.replace(hour=8 + r.randrange(9), minute=15 * r.randrange(4))
    return {"resourceType": "Appointment", "id": f"a{i}", "status": r.choice(STATUSES),
            "serviceType": [{"coding": [{"system": "http://snomed.info/sct",
                                         "code": r.choice(SERVICES)}]}],
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "minutesDuration": 30,
            "participant": [
                {"actor": {"reference": f"Patient/p{r.randrange(patients)}"},
                 "status": "accepted"},
                {"actor": {"reference": f"Practitioner/dr{r.randrange(PRACTITIONERS)}"},
                 "status": "accepted"},
                {"actor": {"reference": f"Location/loc{r.randrange(LOCATIONS)}"},
                 "status": "accepted"}]}


def observation(i: int, patients: int) -> dict[str, Any]:
    r = _rng(3, i)
    when = START + timedelta(minutes=r.randrange(730 * 24 * 60))
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                      "observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                                 "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/p{r.randrange(patients)}"},
            "effectiveDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "valueQuantity": {"value": 50 + r.randrange(60), "unit": "/min",
                              "system": "http://unitsofmeasure.org", "code": "/min"}}


def fixed() -> Iterator[dict[str, Any]]:
    yield {"resourceType": "Organization", "id": "clinic", "name": "Springfield Family Practice"}
    for n in range(PRACTITIONERS):
        r = _rng(4, n)
        yield {"resourceType": "Practitioner", "id": f"dr{n}",
               "name": [{"family": r.choice(FAMILIES), "given": [r.choice(GIVEN)]}]}
    for n in range(LOCATIONS):
        yield {"resourceType": "Location", "id": f"loc{n}", "name": f"Room {n}"}


# -- building (extraction in a process pool, one bulk writer) --------------------------------
# Workers generate resources and run the real extraction, turning each entry into the row
# the SQLite adapter writes for it (`index._row`); the parent inserts history, resources
# and index rows in bulk (executemany), which is what `UnitOfWork.put` writes, minus its
# per-resource round trips. The 1M Observations share one shape: their entries are the
# real extraction of the first one with the varying values (id, subject, date, value)
# substituted, checked against the real extraction every CHECK_EVERY resources.

CHECK_EVERY = 250
_INDEXER = None
_TEMPLATE: list[IndexEntry] = []
Row = tuple[str, str, bytes, list[tuple[str, tuple]]]


def _indexer() -> Any:
    global _INDEXER
    if _INDEXER is None:
        from fhirpm.search.extract import RegistryIndexer
        from fhirpm.search.registry import Registry

        _INDEXER = RegistryIndexer(Registry.load_default())
    return _INDEXER


def _extract_chunk(task: tuple[str, int, int, int]) -> list[Row]:
    kind, lo, hi, patients = task
    make = {"Patient": lambda i: patient(i), "Appointment": lambda i: appointment(i, patients),
            "Observation": lambda i: observation(i, patients)}[kind]
    out = []
    for i in range(lo, hi):
        resource = _stored(make(i))
        if kind == "Observation":
            entries = _observation_entries(resource)
            if i % CHECK_EVERY == 0:
                assert entries == _indexer().extract(kind, resource), resource["id"]
        else:
            entries = _indexer().extract(kind, resource)
        rows = [index._row(0, kind, e) for e in entries]
        out.append((kind, resource["id"], jsonio.dumps(resource),
                    [(table, row[1:]) for table, row in rows]))
    return out


def _stored(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": resource["resourceType"], "id": resource["id"],
            "meta": {"versionId": "1", "lastUpdated": STAMP},
            **{k: v for k, v in resource.items() if k not in ("resourceType", "id")}}


def _observation_entries(resource: dict[str, Any]) -> list[IndexEntry]:
    if not _TEMPLATE:
        _TEMPLATE.extend(_indexer().extract("Observation", resource))
    qty = resource["valueQuantity"]
    value, lo, hi = decimal_bounds(qty["value"])
    subject = resource["subject"]["reference"].split("/")[1]
    out = []
    for e in _TEMPLATE:
        v: Any = e.value
        match e.param:
            case "_id":
                v = values.TokenValue(None, resource["id"])
            case "subject" | "patient":
                v = values.ReferenceValue("Patient", subject)
            case "date":
                v = values.DateValue(*date_range(resource["effectiveDateTime"]))
            case "value-quantity" | "combo-value-quantity":
                v = values.QuantityValue(value, lo, hi, qty["system"], qty["code"], qty["unit"])
        out.append(IndexEntry(e.param, v))
    return out


def build(path: Path, sizes: dict[str, int]) -> None:
    from fhirpm.storage.sqlite import schema

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    schema.migrate(conn)
    started = time.perf_counter()
    first = [(r["resourceType"], r["id"], jsonio.dumps(s),
              [(t, row[1:]) for t, row in (index._row(0, r["resourceType"], e)
                                           for e in _indexer().extract(r["resourceType"], s))])
             for r in fixed() for s in [_stored(r)]]
    chunk = 2000
    tasks = [(kind, lo, min(lo + chunk, n), sizes["Patient"])
             for kind, n in sizes.items() for lo in range(0, n, chunk)]
    done, total, rid = 0, sum(sizes.values()), 0
    with ProcessPoolExecutor(max(1, (os.cpu_count() or 2))) as pool:
        for batch in itertools.chain([first], pool.map(_extract_chunk, tasks)):
            conn.execute("BEGIN")
            _bulk(conn, batch, rid)
            conn.execute("COMMIT")
            rid += len(batch)
            done += len(batch)
            rate = done / (time.perf_counter() - started)
            print(f"\r  built {done:,} of {total:,} ({rate:,.0f}/s)", end="", flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"\n  build took {time.perf_counter() - started:,.0f} s")


def _bulk(conn: sqlite3.Connection, batch: list[Row], last: int) -> None:
    """Rows for versions 1 (rid = seq: a fresh database written in order)."""
    tables: dict[str, list[tuple]] = {}
    history, current = [], []
    for n, (type_, id_, body, rows) in enumerate(batch, start=last + 1):
        history.append((n, type_, id_, 1, STAMP, "POST", body))
        current.append((n, type_, id_, 1, n, 0))
        for table, row in rows:
            tables.setdefault(table, []).append((n, *row))
    conn.executemany("INSERT INTO history (seq, type, id, version, last_updated, method, body)"
                     " VALUES (?,?,?,?,?,?,?)", history)
    conn.executemany("INSERT INTO resources (rid, type, id, version, seq, deleted) "
                     "VALUES (?,?,?,?,?,?)", current)
    for table, rows in tables.items():
        conn.executemany(index._INSERT[table], rows)


# -- the query mix ----------------------------------------------------------------------------

Query = tuple[str, str, list[tuple[str, str]]]  # (class, path, params)


def query_mix(sizes: dict[str, int], rng: random.Random) -> dict[str, Any]:
    """Each name -> a function drawing one concrete query (parameters vary per run)."""
    p = sizes["Patient"]

    def a_patient() -> dict[str, Any]:
        return patient(rng.randrange(p))

    def a_day() -> datetime:
        return START + timedelta(days=rng.randrange(730))

    def week(doctor: str) -> list[tuple[str, str]]:
        day = a_day()
        return [("practitioner", doctor), ("date", f"ge{day.date()}"),
                ("date", f"lt{(day + timedelta(days=7)).date()}")]

    return {
        "single": {
            "Patient?identifier": lambda: ("Patient", [(
                "identifier", f"urn:oid:1.2.36.146.595.217.0.1|MRN{rng.randrange(p):07d}")]),
            "Patient?family (prefix)": lambda: ("Patient", [
                ("family", a_patient()["name"][0]["family"][:4])]),
            "Patient?given": lambda: ("Patient", [("given", rng.choice(GIVEN))]),
            "Patient?birthdate": lambda: ("Patient", [("birthdate", a_patient()["birthDate"])]),
            "Patient?gender (broad)": lambda: ("Patient", [("gender", rng.choice(
                ["male", "female"]))]),
            "Patient?_id": lambda: ("Patient", [("_id", f"p{rng.randrange(p)}")]),
            "Appointment?patient": lambda: ("Appointment", [
                ("patient", f"Patient/p{rng.randrange(p)}")]),
            "Appointment?practitioner": lambda: ("Appointment", [
                ("practitioner", f"Practitioner/dr{rng.randrange(PRACTITIONERS)}")]),
            "Appointment?date (a day)": lambda: ("Appointment", [
                ("date", str(a_day().date()))]),
            "Appointment?status (broad)": lambda: ("Appointment", [
                ("status", rng.choice(["booked", "fulfilled"]))]),
            "Appointment?date=ge (broad)": lambda: ("Appointment", [
                ("date", f"ge{a_day().date()}")]),
        },
        "two params + _include": {
            "Appointment?practitioner&date(week)&_include": lambda: ("Appointment", [
                *week(f"Practitioner/dr{rng.randrange(PRACTITIONERS)}"),
                ("_include", "Appointment:patient")]),
            "Appointment?patient&status&_include": lambda: ("Appointment", [
                ("patient", f"Patient/p{rng.randrange(p)}"), ("status", "booked"),
                ("_include", "Appointment:practitioner")]),
            "Patient?family&birthdate&_revinclude": lambda: ("Patient", [
                ("family", (x := a_patient())["name"][0]["family"]),
                ("birthdate", x["birthDate"]), ("_revinclude", "Appointment:patient")]),
        },
        "sorted / chained": {
            "Appointment?practitioner&_sort=-date": lambda: ("Appointment", [
                ("practitioner", f"Practitioner/dr{rng.randrange(PRACTITIONERS)}"),
                ("_sort", "-date")]),
            "Appointment?patient.birthdate": lambda: ("Appointment", [
                ("patient.birthdate", a_patient()["birthDate"])]),
            "Patient?_has:Appointment:patient:date": lambda: ("Patient", [
                ("_has:Appointment:patient:date", str(a_day().date()))]),
        },
    }


async def measure(path: Path, sizes: dict[str, int], runs: int) -> list[tuple]:
    from fhirpm.app import build_interactions

    store = SqliteResourceStore(str(path))
    ix: Interactions = build_interactions(Settings(store_url=f"sqlite:///{path}",
                                                   base_url=BASE, log_json=False), store)
    await store.open()
    rows: list[tuple] = []
    try:
        rng = random.Random(SEED)
        for cls, queries in query_mix(sizes, rng).items():
            for name, draw in queries.items():
                times, sizes_seen = [], []
                for n in range(runs + 10):
                    path_, params = draw()
                    t0 = time.perf_counter()
                    response = await ix.dispatch(FhirRequest("GET", path_, BASE, tuple(params)))
                    elapsed = time.perf_counter() - t0
                    assert response.status == 200, response.body
                    if n >= 10:  # the first runs warm caches
                        times.append(elapsed * 1000)
                        sizes_seen.append(response.body.count(b'"mode":"match"'))
                rows.append((cls, name, *_percentiles(times), statistics.mean(sizes_seen)))
        rows += await _counts(ix, sizes)
    finally:
        await store.close()
    return rows


async def _counts(ix: Interactions, sizes: dict[str, int]) -> list[tuple]:
    out = []
    for name, path_, params, want in [
        ("Appointment?_summary=count (all)", "Appointment", [("_summary", "count")],
         sizes["Appointment"]),
        ("Observation?code&_summary=count", "Observation",
         [("code", "http://loinc.org|8867-4"), ("_summary", "count")], sizes["Observation"]),
        ("Observation?_total=accurate&_count=10", "Observation",
         [("_total", "accurate"), ("_count", "10")], sizes["Observation"]),
    ]:
        times = []
        for _ in range(6):
            t0 = time.perf_counter()
            response = await ix.dispatch(FhirRequest("GET", path_, BASE, tuple(params)))
            times.append((time.perf_counter() - t0) * 1000)
            assert jsonio.loads(response.body)["total"] == want
        times = times[1:]
        out.append(("count", name, *_percentiles(times), float(want)))
    return out


def _percentiles(times: list[float]) -> tuple[float, float, float]:
    ordered = sorted(times)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return at(0.50), at(0.95), at(0.99)


def report(rows: list[tuple], sizes: dict[str, int], runs: int) -> None:
    print(f"\nSearch latency, {runs} runs per query, through Interactions.dispatch "
          f"({', '.join(f'{n:,} {t}' for t, n in sizes.items())})\n")
    print("| class | query | p50 ms | p95 ms | p99 ms | matches (page) |")
    print("|---|---|---:|---:|---:|---:|")
    for cls, name, p50, p95, p99, hits in rows:
        print(f"| {cls} | {name} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {hits:,.0f} |")
    by_class: dict[str, float] = {}
    for cls, _, _, p95, _, _ in rows:
        by_class[cls] = max(by_class.get(cls, 0.0), p95)
    print("\nworst p95 per class: " + ", ".join(f"{c} {v:.1f} ms" for c, v in by_class.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full sizes (default 1: 100k/300k/1M)")
    parser.add_argument("--runs", type=int, default=200, help="samples per query")
    parser.add_argument("--db", type=Path, help="database path (default: bench/results/...)")
    parser.add_argument("--rebuild", action="store_true", help="build the database anew")
    parser.add_argument("--build-only", action="store_true", help="build, do not measure")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    sizes = {"Patient": int(100_000 * args.scale), "Appointment": int(300_000 * args.scale),
             "Observation": int(1_000_000 * args.scale)}
    path = args.db or RESULTS / (f"search-{sizes['Patient']}-{sizes['Appointment']}-"
                                 f"{sizes['Observation']}-{SEED}.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.rebuild or not path.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        print(f"building {path} ...")
        partial = path.with_suffix(".partial")  # renamed once whole: a crash leaves no half
        for suffix in ("", "-wal", "-shm"):
            Path(f"{partial}{suffix}").unlink(missing_ok=True)
        build(partial, sizes)
        partial.rename(path)
    if args.build_only:
        return 0
    rows = asyncio.run(measure(path, sizes, args.runs))
    report(rows, sizes, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
