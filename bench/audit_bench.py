"""The cost of the audit trail on reads: the read benchmark with auditing on vs off.

Two fhirpm servers as deployed (authorization on, a staff bearer token), identical but for
FHIRPM_AUDIT__ENABLED, each on its own SQLite file seeded with the same Patients, are
measured with `GET /fhir/Patient/{id}` in alternating slices (bench.read_bench's machinery:
same client, same connections, ABBA order, server CPU from /proc). With auditing on, every
read's record is made durable in the audit journal before the response goes out, and the
sealer process `fhirpm serve` starts seals it into the hash chain (fhirpm.audit.journal).
Prints both servers' throughput, latency and CPU per request and the medians of the
per-slice ratios on/off (target: >= 0.8), then the same reads called in-process (no HTTP,
no sealer process: the app seals its journal itself).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
from pathlib import Path

from bench import asgi, data
from bench.loadgen import RunResult
from bench.read_bench import alternate, fetch, parse, pooled, seed
from bench.server import ServerProcess

DESCRIPTION = "read throughput with the audit trail on vs off (target: on >= 0.8 of off)"
TARGET = 0.8


def main(argv: list[str]) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="fhirpm-bench-audit-") as tmp:
        work = Path(tmp)
        ids = [f"bench-{n}" for n in range(args.resources)]
        on_db, off_db = work / "audit-on.db", work / "audit-off.db"
        with ServerProcess.fhirpm(f"sqlite:///{on_db}", work / "on.log", auth=True) as on, \
                ServerProcess.fhirpm(f"sqlite:///{off_db}", work / "off.log", auth=True,
                                     env={"FHIRPM_AUDIT__ENABLED": "false"}) as off:
            for server in (on, off):
                seed(server.port, data.sample_patient(), ids, server.auth_headers)
            # the same resource but for meta.lastUpdated: bodies of the same size
            if len(fetch(on.port, ids[0], on.auth_headers)) != len(
                    fetch(off.port, ids[0], off.auth_headers)):
                raise SystemExit("the two servers serve different resources; not comparable")
            ours, theirs = alternate(on, off, ids, args)
        report(args, ours, theirs)
        in_process(work, ids)
    return 0


def report(args: argparse.Namespace, on: list[RunResult], off: list[RunResult]) -> None:
    pairs = list(zip(on, off, strict=True))
    ratio = statistics.median(a.rate / b.rate for a, b in pairs if b.rate)
    cpu_ratio = statistics.median(b.cpu_per_request / a.cpu_per_request for a, b in pairs
                                  if a.cpu_per_request)
    print(f"## audit: GET /fhir/Patient/{{id}} over HTTP, {args.resources} Patients, "
          f"{args.connections} connections, {args.slices} alternating slices of "
          f"{args.slice:g} s per server")
    print(f"  {'':<16}{'req/s (median)':>15}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}")
    for name, runs in (("audit on", on), ("audit off", off)):
        rate = statistics.median(r.rate for r in runs)
        cpu = statistics.median(r.cpu_per_request for r in runs) * 1e6
        every = pooled(runs)
        print(f"  {name:<16}{rate:>15,.0f}{every.percentile(50):>9.2f}"
              f"{every.percentile(99):>9.2f}{cpu:>12,.0f}")
    verdict = "meets" if ratio >= TARGET else "BELOW"
    print(f"  ratio on/off: throughput {ratio:.2f}, server CPU per request {cpu_ratio:.2f} "
          f"(medians of slices); throughput {verdict} the {TARGET} target")
    # the sealer process works in bursts (fhirpm.audit.sealer): the mean counts every one
    total_on, total_off = sum(a.rate for a, _ in pairs), sum(b.rate for _, b in pairs)
    print(f"  ratio of the summed rates (every slice, sealing bursts included): "
          f"{total_on / total_off:.2f}" if total_off else "")


def in_process(work: Path, ids: list[str]) -> None:
    """CPU per read with the app called in-process (no HTTP server), audit on and off."""
    from fhirpm.app import create_app
    from fhirpm.config import Settings

    async def measure(db: Path, enabled: bool) -> float:
        settings = Settings(store_url=f"sqlite:///{db}", log_level="WARNING", log_json=False,
                            auth={"enabled": False}, audit={"enabled": enabled})
        app = create_app(settings)
        paths = [f"/fhir/Patient/{rid}" for rid in ids]
        async with app.router.lifespan_context(app):
            return await asgi.cpu_per_request(app, paths)

    logging.getLogger("fhirpm").setLevel(logging.ERROR)  # the auth-disabled warning
    on = asyncio.run(measure(work / "audit-on.db", True))
    off = asyncio.run(measure(work / "audit-off.db", False))
    print(f"  in-process (ASGI, one request at a time, CPU us/req; no sealer process, so the "
          f"app seals its journal itself): audit on {on * 1e6:,.0f}, off {off * 1e6:,.0f} "
          f"(ratio off/on {off / on:.2f})")
