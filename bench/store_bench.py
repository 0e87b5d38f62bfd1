"""The same create/read workload on each store, through the storage port (no HTTP, no
validation: index entries are extracted before the clock starts).

    python -m bench store [--count 500] [--mongo-url mongodb://...]

MongoDB: `--mongo-url`, else FHIRPM_TEST_MONGODB_URL, else the mongoeco emulator started in
a child process on a loopback port. Emulator figures are labelled as such: they measure a
Python emulator, not MongoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.data import sample_patient
from fhirpm.fhir import jsonio
from fhirpm.search.extract import RegistryIndexer
from fhirpm.search.registry import Registry
from fhirpm.search.values import IndexEntry
from fhirpm.storage.port import ResourceStore, ResourceVersion

DESCRIPTION = "create/read throughput of the SQLite and MongoDB stores (port level)"

EMULATOR = """
import asyncio, sys
from mongoeco.wire import AsyncMongoEcoProxyServer
async def main():
    async with AsyncMongoEcoProxyServer(host="127.0.0.1", port=0) as server:
        print(server.address.uri, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


@dataclass
class Figures:
    creates: float  # resources/s, one unit of work each
    bundled: float  # resources/s, 100 per unit of work
    reads: float  # reads/s, one at a time
    p50_ms: float
    p99_ms: float
    concurrent_reads: float  # reads/s, 16 at a time


def workload(count: int) -> list[tuple[ResourceVersion, list[IndexEntry]]]:
    """`count` Patients with distinct names, their stored bytes and index entries."""
    indexer = RegistryIndexer(Registry.load_default())
    rng = random.Random(7)
    base = sample_patient()
    out = []
    for n in range(count):
        id = str(uuid.UUID(int=rng.getrandbits(128)))
        lu = f"2024-01-01T00:00:{n % 60:02d}.{n:06d}Z"
        resource = {**base, "id": id, "meta": {"versionId": "1", "lastUpdated": lu},
                    "name": [{"family": f"Family{n}", "given": [f"Given{n % 97}"]}]}
        body = jsonio.dumps(resource)
        version = ResourceVersion("Patient", id, 1, lu, "POST", body)
        out.append((version, indexer.extract("Patient", resource)))
    return out


async def run(store: ResourceStore, items: list[tuple[ResourceVersion, list[IndexEntry]]]
              ) -> Figures:
    half = len(items) // 2
    singles, bundled = items[:half], items[half:]

    async def create_one(v: ResourceVersion, entries: list[IndexEntry]) -> None:
        async with store.unit_of_work() as uow:
            await uow.put(v, entries, expected_version=0)

    started = time.perf_counter()
    for v, entries in singles:
        await create_one(v, entries)
    creates = len(singles) / (time.perf_counter() - started)

    started = time.perf_counter()
    for i in range(0, len(bundled), 100):
        async with store.unit_of_work() as uow:
            for v, entries in bundled[i:i + 100]:
                await uow.put(v, entries, expected_version=0)
    bundle_rate = len(bundled) / (time.perf_counter() - started)

    ids = [v.id for v, _ in items]
    random.Random(3).shuffle(ids)
    latencies = []
    for id in ids:
        t = time.perf_counter()
        found = await store.read("Patient", id)
        latencies.append(time.perf_counter() - t)
        assert found is not None
    reads = len(ids) / sum(latencies)
    q = statistics.quantiles(latencies, n=100)

    async def reader(share: list[str]) -> None:
        for id in share:
            await store.read("Patient", id)

    started = time.perf_counter()
    await asyncio.gather(*(reader(ids[k::16]) for k in range(16)))
    concurrent = len(ids) / (time.perf_counter() - started)
    return Figures(creates, bundle_rate, reads, q[49] * 1000, q[98] * 1000, concurrent)


async def measure(make: Callable[[], ResourceStore],
                  items: list[tuple[ResourceVersion, list[IndexEntry]]]) -> Figures:
    store = make()
    await store.open()
    try:
        return await run(store, items)
    finally:
        await store.close()


async def measure_mongo(url: str, items: list[tuple[ResourceVersion, list[IndexEntry]]]
                        ) -> Figures:
    """In a database of its own, dropped afterwards."""
    from pymongo import AsyncMongoClient

    from fhirpm.storage.mongo import MongoResourceStore

    database = f"fhirpm_bench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(url)
    named = urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))
    try:
        return await measure(lambda: MongoResourceStore(named), items)
    finally:
        client: AsyncMongoClient = AsyncMongoClient(url)
        await client.drop_database(database)
        await client.close()


@contextmanager
def emulator() -> Any:
    child = subprocess.Popen([sys.executable, "-c", EMULATOR], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)


def _row(label: str, f: Figures) -> str:
    return (f"{label:<44} {f.creates:>9.0f} {f.bundled:>11.0f} {f.reads:>9.0f} "
            f"{f.p50_ms:>7.2f} {f.p99_ms:>7.2f} {f.concurrent_reads:>12.0f}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench store", description=DESCRIPTION)
    p.add_argument("--count", type=int, default=500, help="resources per store (default 500)")
    p.add_argument("--mongo-url", default=os.environ.get("FHIRPM_TEST_MONGODB_URL"),
                   help="a real MongoDB (replica set); default: the mongoeco emulator")
    args = p.parse_args(argv)
    items = workload(max(args.count, 4))
    from fhirpm.storage.sqlite import SqliteResourceStore

    print(f"{args.count} Patients ({len(items[0][0].body)} bytes, {len(items[0][1])} index "
          "entries each): half created one per unit of work, half 100 per unit; then each "
          "read once in random order, then again by 16 concurrent readers", flush=True)
    print(f"{'store':<44} {'creates/s':>9} {'bundled r/s':>11} {'reads/s':>9} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'16-conc r/s':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.db")
        figures = asyncio.run(measure(lambda: SqliteResourceStore(path), items))
        print(_row("sqlite (file, WAL)", figures), flush=True)

    if args.mongo_url:
        figures = asyncio.run(measure_mongo(args.mongo_url, items))
        print(_row("mongodb (real server)", figures), flush=True)
    else:
        with emulator() as url:
            figures = asyncio.run(measure_mongo(url, items))
        print(_row("mongo EMULATOR (mongoeco; not MongoDB speed)", figures), flush=True)
        print("emulator figures measure a Python emulator in another process over loopback "
              "TCP; set FHIRPM_TEST_MONGODB_URL for MongoDB figures")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

