"""Read-by-id over real HTTP: fhirpm vs the framework floor (bench.floor_app), same run.

Seeds Patients into a fresh store through fhirpm, then starts the floor beside it: a bare
Starlette route returning the same stored bytes and headers under the same uvicorn options,
reading the same file. The same keep-alive client then measures `GET /fhir/Patient/{id}` on
the two servers in alternating short slices (an idle server costs nothing), so both see
the same machine. It also reads each server's CPU time (/proc) per slice: CPU per request is
what a busy or shared machine distorts least, so the CPU ratio is printed beside the
throughput ratio. Prints median throughput, pooled p50/p99 latency, CPU us per request and
the medians of the per-slice ratios (target: fhirpm >= 0.6 of the floor). Last, both apps are
called in-process without a server (bench.asgi), which shows how much of a request is the
application's and how much the HTTP server's.

fhirpm runs as deployed: authorization on (a staff bearer token on every request), the JSON
access log at INFO (written to the server's log file) and the audit trail as configured
(`--audit on`, the default, records an AuditEvent per read; `--audit off` measures the REST
core alone). The in-process run uses the same settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench import asgi, data, floor_app
from bench.loadgen import RunResult, new_loop_runner, run
from bench.server import ServerProcess, cpu_seconds

DESCRIPTION = "read-by-id throughput and p50/p99 vs a bare Starlette route (framework floor)"
TARGET = 0.6


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench read", description=DESCRIPTION)
    p.add_argument("--resources", type=int, default=500, help="Patients to seed (500)")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections (16)")
    p.add_argument("--slices", type=int, default=8, help="alternating slices per server (8)")
    p.add_argument("--slice", type=float, default=1.0, help="seconds per slice (1)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up each (1)")
    p.add_argument("--max-requests", type=int, default=2_000_000)
    p.add_argument("--audit", choices=("on", "off"), default="on",
                   help="the audit trail (an AuditEvent per read) on as deployed, or off")
    return p.parse_args(argv)


def deployed(args: argparse.Namespace) -> dict[str, str]:
    """fhirpm's settings as `fhirpm serve` runs by default (but for `--audit off`)."""
    return {"FHIRPM_LOG_JSON": "true", "FHIRPM_LOG_LEVEL": "INFO",
            "FHIRPM_AUDIT__ENABLED": "true" if args.audit == "on" else "false"}


def main(argv: list[str]) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="fhirpm-bench-read-") as tmp:
        work = Path(tmp)
        db = work / "read.db"
        ids = [f"bench-{n}" for n in range(args.resources)]
        # as deployed: authorization on, every request with a staff bearer token
        with ServerProcess.fhirpm(f"sqlite:///{db}", work / "fhirpm.log", auth=True,
                                  env=deployed(args)) as fhirpm:
            token = fhirpm.auth_headers
            seed(fhirpm.port, data.sample_patient(), ids, token)
            with ServerProcess.on_free_port(
                    lambda port: [sys.executable, "-m", "bench.floor_app", "--port", str(port),
                                  "--db", str(db)],
                    work / "floor.log", ready_path="/fhir/none/none") as floor:
                floor.token = fhirpm.token  # the floor gets (and ignores) the same header
                sample = fetch(fhirpm.port, ids[0], token)
                if fetch(floor.port, ids[0], token) != sample:
                    raise SystemExit("floor and fhirpm serve different bytes; not comparable")
                ours, theirs = alternate(fhirpm, floor, ids, args)
        report(args, len(sample), ours, theirs)
        app_alone(db, ids, args, work / "in-process.log")
    return 0


def app_alone(db: Path, ids: list[str], args: argparse.Namespace, log_file: Path) -> None:
    """CPU per read of each application called in-process (no HTTP server, no sockets),
    fhirpm with the server's settings: a bearer token, the JSON access log (to a file)."""
    from fhirpm import logs
    from fhirpm.app import create_app
    from fhirpm.auth.tokens import Grant
    from fhirpm.config import Settings

    async def measure_both() -> tuple[float, float]:
        settings = Settings(store_url=f"sqlite:///{db}", log_level="INFO", log_json=True,
                            audit={"enabled": args.audit == "on"})
        app = create_app(settings)
        paths = [f"/fhir/Patient/{rid}" for rid in ids]
        async with app.router.lifespan_context(app):
            grant = Grant(client_id="bench", sub="staff", scope="user/*.cruds",
                          fhir_user="Practitioner/staff")
            token = (await app.state.auth.tokens.issue(grant))["access_token"]
            headers = [(b"authorization", f"Bearer {token}".encode())]
            sent = await asgi.call(app, "GET", paths[0], headers=headers)
            if sent[0]["status"] != 200:
                raise SystemExit(f"in-process GET {paths[0]} answered {sent[0]['status']}")
            ours = await asgi.cpu_per_request(app, paths, headers=headers)
        return ours, await asgi.cpu_per_request(floor_app.create_app(str(db)), paths)

    with log_file.open("w") as sink:
        logs.configure("INFO", json=True)
        logging.getLogger().handlers[0].setStream(sink)
        try:
            ours, floor = asyncio.run(measure_both())
        finally:
            logging.getLogger().handlers[0].flush()
            logs.configure("WARNING", json=False)
    print(f"  app alone (in-process ASGI, CPU us/req, as served): fhirpm {ours * 1e6:,.0f}, "
          f"floor {floor * 1e6:,.0f}")


def alternate(ours: ServerProcess, floor: ServerProcess, ids: list[str],
              args: argparse.Namespace) -> tuple[list[RunResult], list[RunResult]]:
    """Measure the two servers in alternating slices (ABBA order), after a warm-up each."""
    measure(ours, ids, args.warmup, args)
    measure(floor, ids, args.warmup, args)
    mine: list[RunResult] = []
    base: list[RunResult] = []
    for n in range(args.slices):
        pair = ((ours, mine), (floor, base)) if n % 2 == 0 else ((floor, base), (ours, mine))
        for server, results in pair:
            results.append(measure(server, ids, args.slice, args))
    return mine, base


def seed(port: int, patient: dict, ids: list[str], token: dict[str, str]) -> None:
    bodies = [json.dumps({**patient, "id": rid}).encode() for rid in ids]
    with new_loop_runner() as runner:
        result = runner.run(run("127.0.0.1", port, lambda n: ("PUT", f"/fhir/Patient/{ids[n]}",
                                                            bodies[n]),
                                connections=4, duration=600, max_requests=len(ids),
                                headers={"Content-Type": "application/fhir+json", **token}))
    if result.errors or result.requests != len(ids):
        raise SystemExit(f"seeding failed: {result.statuses}")


def fetch(port: int, rid: str, token: dict[str, str]) -> bytes:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/fhir/Patient/{rid}", headers=token)
        return conn.getresponse().read()
    finally:
        conn.close()


def measure(server: ServerProcess, ids: list[str], seconds: float,
            args: argparse.Namespace) -> RunResult:
    def request(n: int) -> tuple[str, str, None]:
        return "GET", f"/fhir/Patient/{ids[n % len(ids)]}", None

    cpu_before = cpu_seconds(server.pid)
    with new_loop_runner() as runner:
        result = runner.run(run("127.0.0.1", server.port, request,
                                connections=args.connections, duration=seconds,
                                max_requests=args.max_requests, headers=server.auth_headers))
    result.server_cpu = cpu_seconds(server.pid) - cpu_before
    if result.errors:
        raise SystemExit(f"errors during the read benchmark: {result.statuses}")
    return result


def pooled(runs: list[RunResult]) -> RunResult:
    out = RunResult(requests=sum(r.requests for r in runs), seconds=sum(r.seconds for r in runs))
    for r in runs:
        out.latencies.extend(r.latencies)
    return out


def report(args: argparse.Namespace, size: int, ours: list[RunResult],
           floor: list[RunResult]) -> None:
    pairs = list(zip(ours, floor, strict=True))
    ratio = statistics.median(a.rate / b.rate for a, b in pairs if b.rate)
    cpu_ratio = statistics.median(b.cpu_per_request / a.cpu_per_request for a, b in pairs
                                  if a.cpu_per_request)
    print(f"## read: GET /fhir/Patient/{{id}} over HTTP, {args.resources} Patients of "
          f"{size} bytes, {args.connections} connections, {args.slices} alternating slices "
          f"of {args.slice:g} s per server; audit trail {args.audit}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  {'':<24}{'req/s (median)':>15}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}")
    for name, runs in (("fhirpm", ours), ("floor (bare Starlette)", floor)):
        rate = statistics.median(r.rate for r in runs)
        cpu = statistics.median(r.cpu_per_request for r in runs) * 1e6
        all_runs = pooled(runs)
        print(f"  {name:<24}{rate:>15,.0f}{all_runs.percentile(50):>9.2f}"
              f"{all_runs.percentile(99):>9.2f}{cpu:>12,.0f}")
    verdict = "meets" if min(ratio, cpu_ratio) >= TARGET else "BELOW"
    print(f"  ratio fhirpm/floor: throughput {ratio:.2f}, server CPU per request "
          f"{cpu_ratio:.2f} (medians of slices); {verdict} the {TARGET} target")
