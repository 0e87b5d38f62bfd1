"""Writes over real HTTP: Synthea transaction ingest and single creates, vs the storage floor.

1. A fresh fhirpm server; POST Synthea's hospital and practitioner batch bundles
   (conditional creates), then every patient transaction bundle, `--rounds` times (later
   rounds create fresh copies). Resources/s counts bundle entries.
2. Creates: the stored documents of one round (references already resolved), ids removed,
   POSTed one per request over keep-alive connections.
3. The storage floor: the same documents' bytes inserted with plain sqlite3 into a
   history + current-pointer schema like fhirpm's (same PRAGMAs): one transaction per
   bundle, and one per document for the creates.
Also prints fhirkit-rs validation time per resource on the same mix, in-process, for
orientation: the budget goes to validation and index extraction.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from bench import data
from bench.loadgen import RunResult, new_loop_runner, run
from bench.server import ServerProcess, cpu_seconds

DESCRIPTION = "Synthea transaction ingest and create throughput vs raw sqlite3 insert"
TARGET = 1200  # resources/s for Synthea transaction ingest on this 2-core machine
FHIR_JSON = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench ingest", description=DESCRIPTION)
    p.add_argument("--rounds", type=int, default=2, help="times the patient bundles go in (2)")
    p.add_argument("--bundle-connections", type=int, default=2,
                   help="transaction bundles in flight (2)")
    p.add_argument("--create-connections", type=int, default=8, help="creates in flight (8)")
    p.add_argument("--creates", type=int, default=3000, help="at most this many creates")
    p.add_argument("--duration", type=float, default=30.0, help="bound per phase, s (30)")
    p.add_argument("--audit", choices=("on", "off"), default="on",
                   help="the audit trail (AuditEvents for every write) on as deployed, or off")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    files = data.synthea_files()
    shared = [json.loads(p.read_bytes()) for p in files
              if p.name.startswith(("hospitalInformation", "practitionerInformation"))]
    patients = [p.read_bytes() for p in files
                if not p.name.startswith(("hospitalInformation", "practitionerInformation"))]
    per_round = sum(len(json.loads(b)["entry"]) for b in patients)
    with tempfile.TemporaryDirectory(prefix="fhirpm-bench-ingest-") as tmp:
        work = Path(tmp)
        db = work / "ingest.db"
        audit = {"FHIRPM_AUDIT__ENABLED": "true" if args.audit == "on" else "false"}
        with ServerProcess.fhirpm(f"sqlite:///{db}", work / "fhirpm.log", env=audit) as server:
            batch = timed(server, lambda: post_all(
                server.port, [json.dumps(b).encode() for b in shared], 1, args))
            tx = timed(server, lambda: post_all(
                server.port, patients * args.rounds, args.bundle_connections, args))
            # the shared bundles' types, and the audit trail's own records (append-only)
            documents = stored_documents(db, exclude=("Organization", "Practitioner",
                                                      "PractitionerRole", "Location",
                                                      "AuditEvent"))
            documents = documents[:per_round]
            creates = timed(server, lambda: create_all(server.port, documents, args))
        bundles = [bundle_documents(b) for b in patients]
        floor_tx = floor_rate(work / "floor-tx.db", bundles * args.rounds)
        floor_create = floor_rate(work / "floor-create.db",
                                  [[d] for d in documents[: creates.requests or 1]])
    validation_us = validation_cost(d for b in bundles for d in b)
    report(args, batch, sum(len(b["entry"]) for b in shared), tx, per_round * args.rounds,
           creates, floor_tx, floor_create, validation_us)
    return 0


# -- fhirpm over HTTP --------------------------------------------------------------------


def timed(server: ServerProcess, phase: Callable[[], RunResult]) -> RunResult:
    """Run a phase and note the server's CPU seconds meanwhile: all its threads, and its
    worker processes (large transactions are validated and indexed in them)."""
    before, workers_before = cpu_seconds(server.pid), children_cpu_seconds(server.pid)
    result = phase()
    result.workers_cpu = children_cpu_seconds(server.pid) - workers_before
    result.server_cpu = cpu_seconds(server.pid) - before + result.workers_cpu
    return result


def children_cpu_seconds(pid: int) -> float:
    """CPU seconds of the live child processes of `pid` (Linux /proc)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(cpu_seconds(int(child)) for child in children)
    return total


def post_all(port: int, bodies: list[bytes], connections: int,
             args: argparse.Namespace) -> RunResult:
    with new_loop_runner() as runner:
        result = runner.run(run("127.0.0.1", port, lambda n: ("POST", "/fhir", bodies[n]),
                                connections=connections, duration=args.duration * 4,
                                max_requests=len(bodies), headers=FHIR_JSON))
    if result.errors or result.requests != len(bodies):
        raise SystemExit(f"bundle ingest failed or timed out: {result.statuses}")
    return result


def create_all(port: int, documents: list[tuple[str, bytes]],
               args: argparse.Namespace) -> RunResult:
    bodies = [(f"/fhir/{t}", _without_id(body)) for t, body in documents]
    count = min(args.creates, len(bodies))
    with new_loop_runner() as runner:
        result = runner.run(run("127.0.0.1", port, lambda n: ("POST", *bodies[n]),
                                connections=args.create_connections, duration=args.duration,
                                max_requests=count, headers=FHIR_JSON))
    if result.errors:
        raise SystemExit(f"creates failed: {result.statuses}")
    return result


def _without_id(body: bytes) -> bytes:
    doc = json.loads(body)
    doc.pop("id", None)
    doc.pop("meta", None)
    return json.dumps(doc).encode()


def stored_documents(db: Path, exclude: tuple[str, ...]) -> list[tuple[str, bytes]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT h.type, h.body FROM history h ORDER BY h.seq").fetchall()
    finally:
        conn.close()
    return [(t, bytes(b)) for t, b in rows if t not in exclude]


# -- the storage floor --------------------------------------------------------------------

_FLOOR_SCHEMA = """
CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL,
    id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
    method TEXT NOT NULL, body BLOB NOT NULL, UNIQUE (type, id, version));
CREATE TABLE resources (rid INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL,
    version INTEGER NOT NULL, seq INTEGER NOT NULL, deleted INTEGER NOT NULL,
    UNIQUE (type, id));
"""


def bundle_documents(raw: bytes) -> list[tuple[str, bytes]]:
    entries = json.loads(raw)["entry"]
    return [(e["resource"]["resourceType"], json.dumps(e["resource"]).encode())
            for e in entries]


def floor_rate(path: Path, units: list[list[tuple[str, bytes]]]) -> float:
    """Resources/s for plain sqlite3 inserts of `units`, one transaction per unit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_FLOOR_SCHEMA)
    stamp = "2024-01-01T00:00:00.000000Z"
    count = 0
    started = time.perf_counter()
    for unit in units:
        conn.execute("BEGIN IMMEDIATE")
        for type_, body in unit:
            count += 1
            rid = f"id-{count}"
            seq = conn.execute("INSERT INTO history (type, id, version, last_updated, method, "
                               "body) VALUES (?,?,1,?,'POST',?)",
                               (type_, rid, stamp, body)).lastrowid
            conn.execute("INSERT INTO resources (type, id, version, seq, deleted) "
                         "VALUES (?,?,1,?,0)", (type_, rid, seq))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def validation_cost(documents: Iterable[tuple[str, bytes]]) -> float:
    """Microseconds per resource for fhirkit-rs structural validation, in-process."""
    import fhirkit

    bodies = [body for _, body in documents]
    started = time.perf_counter()
    for body in bodies:
        fhirkit.validate(body)
    return (time.perf_counter() - started) / len(bodies) * 1e6


# -- report -------------------------------------------------------------------------------


def report(args: argparse.Namespace, batch: RunResult, batch_resources: int, tx: RunResult,
           tx_resources: int, creates: RunResult, floor_tx: float, floor_create: float,
           validation_us: float) -> None:
    tx_rate = tx_resources / tx.seconds
    create_rate = creates.rate
    print(f"## ingest: Synthea over HTTP ({tx.requests // args.rounds} patient bundles x "
          f"{args.rounds} rounds, {args.bundle_connections} in flight); audit trail "
          f"{args.audit}; load average {os.getloadavg()[0]:.1f}")
    print(f"  {'':<34}{'resources/s':>12}{'floor':>9}{'ratio':>7}{'server CPU us/res':>19}"
          f"{'in workers':>12}")
    rows = (("batch (conditional creates)", batch_resources / batch.seconds, None,
             batch.server_cpu / batch_resources, batch.workers_cpu / batch_resources),
            ("transaction bundles", tx_rate, floor_tx, tx.server_cpu / tx_resources,
             tx.workers_cpu / tx_resources),
            (f"creates ({args.create_connections} connections)", create_rate, floor_create,
             creates.cpu_per_request, creates.workers_cpu / max(creates.requests, 1)))
    for name, rate, floor, cpu, workers in rows:
        floor_text = f"{floor:>9,.0f}{rate / floor:>7.3f}" if floor else f"{'':>16}"
        print(f"  {name:<34}{rate:>12,.0f}{floor_text}{cpu * 1e6:>19,.0f}"
              f"{workers * 1e6:>12,.0f}")
    print(f"  creates: p50 {creates.percentile(50):.2f} ms, p99 {creates.percentile(99):.2f} ms"
          f" over {creates.requests} requests")
    print(f"  fhirkit-rs validation, in-process: {validation_us:.0f} us/resource "
          f"(= {1e6 / validation_us:,.0f}/s on one core)")
    verdict = "meets" if tx_rate >= TARGET else "BELOW"
    print(f"  transaction ingest {tx_rate:,.0f} res/s ({verdict} the {TARGET:,} target)")
