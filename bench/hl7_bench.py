"""HL7 v2 throughput: the parse-only floor beside sustained inbound over MLLP.

    .venv/bin/python -m bench.hl7_bench [--messages 300] [--data ../shared/data/hl7v2]
        [--sets small,samples,rest] [--connections 4] [--no-audit-on] [--pairs 3]

Prints, on this machine:
  parse      our tokenizer (every field split), python-hl7 and hl7apy when installed
  map        parse + mapping engine (the Bundle), no store
  tx         the mapped transaction Bundles dispatched in-process (the REST transaction
             path, no HTTP, no v2): the ingest rate to compare against
  mllp       messages sent over one MLLP connection, each ACKed after its unit of work
             committed (as deployed: the audit trail on), and again with the audit trail
             off (the bridge's own cost); then spread over `--connections` connections
             at once (several senders: a lab, the EHR, the scheduler), audit trail off
  vs REST   issue #7's comparison, in one run (set `rest`): two real servers as deployed
             (`fhirpm serve`, one with `--mllp`), each on a fresh store; alternating
             slices: all Synthea patient transaction Bundles POSTed over HTTP, 2 in
             flight (the "transaction bundles" row of `bench ingest`, its machinery),
             then kitchen-sink messages over one MLLP connection (ACK after commit);
             `--pairs` pairs, audit trail on (as deployed), then off. Prints each
             slice's resources/s and the servers' CPU per resource, the median ratio
             MLLP / REST and its range against the 0.8 target, and the same ratio by
             CPU per resource (what a loaded machine distorts least).
Rates: msg/s; resources/s = the resources the messages carry (each looked up, merged and
written unless unchanged); versions/s = new versions stored (AuditEvents not counted).
for the kitchen-sink samples (~17 resources each) and for small ADT^A08 / SIU^S12
messages. Each message gets a new control id and new patient/visit/appointment numbers,
so every one creates resources rather than hitting the duplicate check. The store rows
first process WARM messages untimed (first use of the validator, search registry, caches).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fhirpm.hl7v2 import parser
from fhirpm.hl7v2.engine import Engine
from fhirpm.storage.port import ResourceStore

SMALL = [
    "MSH|^~\\&|EHR|CLINIC|FHIRPM|PRACTICE|20240102030405+0100||ADT^A08|{n}|P|2.5.1\r"
    "EVN|A08|20240102030405+0100\r"
    "PID|1||M{n}^^^PRACTICE^MR||Doe^Jane^Q||19800102|F|||1 Main St^^Springfield^IL^62701||"
    "555-1234^PRN^PH\r"
    "PV1|1|O|CLINIC^R1^^PRACTICE||||1234^Welby^Marcus^^^Dr||||||||||||V{n}^^^PRACTICE^VN\r",
    "MSH|^~\\&|SCHED|CLINIC|FHIRPM|PRACTICE|20240102030405+0100||SIU^S12|{n}|P|2.5.1\r"
    "SCH||A{n}^SCHED|||||ROUTINE|Normal|30|min|^^^20240301090000+0100||||||||||||||Booked\r"
    "PID|1||M{n}^^^PRACTICE^MR||Doe^Jane||19800102|F\r"
    "RGS|1\r"
    "AIP|1||1234^Welby^Marcus|D^Doctor\r",
]


WARM = 20  # messages processed untimed before each store row
TARGET = 0.8  # issue #7: MLLP resources/s >= 0.8 of the REST (Synthea transaction) rate


def small_messages(count: int) -> list[bytes]:
    return [SMALL[n % 2].replace("{n}", f"S{n}").encode() for n in range(count)]


def sample_messages(data: Path, count: int) -> list[bytes]:
    """The samples made unique per copy: control id and the identifiers mapping keys on
    (the patient's, its account's, visits', coverages', diagnoses' and procedures'), so
    each copy is a new patient with its own records, as real traffic is; the practice's
    staff, locations and payers stay shared."""
    # the A40 samples ask for no acknowledgement at all (MSH-15/16 NE): nothing to time
    files = [p.read_bytes() for p in sorted(data.glob("msft-*.hl7")) if "A40" not in p.name]
    keys = (b"PATID1234", b"1234567^", b"40007716", b"36996", b"12345", b"HMO-12345",
            b"4000776^", b"DI20^", b"|PR1006|")
    out = []
    for n in range(count):
        raw = files[n % len(files)]
        control = parser.parse(raw).header.control_id.encode()
        raw = raw.replace(b"|" + control + b"|", f"|B{n}|".encode(), 1)
        for key in keys:
            raw = raw.replace(key, key[:3] + f"B{n}X".encode() + key[3:])
        out.append(raw)
    return out


def timed(label: str, count: int, seconds: float, resources: int | None = None,
          versions: int | None = None, cpu: float | None = None) -> None:
    line = f"  {label:<36} {count / seconds:8.1f} msg/s"
    if resources is not None:
        line += f" {resources / seconds:8.1f} resources/s"
    if versions is not None:
        line += f" {versions / seconds:8.1f} versions/s"
    if cpu is not None:
        line += f" {cpu / count * 1000:6.2f} ms CPU/msg"
    print(line, flush=True)


async def data_versions(store: ResourceStore) -> int:
    """Versions stored, the audit trail's AuditEvents left out (they are not data)."""
    from fhirpm.storage.port import HistoryQuery

    return (await store.history_count(HistoryQuery())
            - await store.history_count(HistoryQuery(type="AuditEvent")))


def bench_parse(messages: list[bytes]) -> None:
    start = time.perf_counter()
    for raw in messages:
        msg = parser.parse(raw)
        for seg in msg.segments:
            for n in range(1, seg.size + 1):
                seg.field(n)
    timed("parse (ours, every field)", len(messages), time.perf_counter() - start)
    try:
        import hl7  # python-hl7, optional
    except ImportError:
        print("  python-hl7 not installed (pip install hl7 to compare)")
    else:
        texts = [parser.decode(m).replace("\r\n", "\r").replace("\n", "\r") for m in messages]
        start = time.perf_counter()
        for text in texts:
            hl7.parse(text)
        timed("parse (python-hl7)", len(texts), time.perf_counter() - start)
    try:
        from hl7apy.parser import parse_message  # optional
    except ImportError:
        print("  hl7apy not installed (pip install hl7apy to compare)")
    else:
        few = messages[:20]
        start = time.perf_counter()
        for raw in few:
            text = parser.decode(raw).replace("\r\n", "\r").replace("\n", "\r")
            parse_message(text, find_groups=False)
        timed("parse (hl7apy, find_groups=False)", len(few), time.perf_counter() - start)


def bench_map(messages: list[bytes]) -> None:
    engine = Engine()
    start = time.perf_counter()
    resources = sum(len(engine.map(parser.parse(raw)).resources) for raw in messages)
    timed("parse + map (Bundle built)", len(messages), time.perf_counter() - start, resources)


async def bench_store(messages: list[bytes], label: str, connections: int = 4,
                      audit_on: bool = True) -> None:
    from fhirpm.app import build_interactions
    from fhirpm.config import Settings
    from fhirpm.repository.conditional import find_matches
    from fhirpm.repository.interactions import FhirRequest
    from fhirpm.storage.factory import store_from_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(store_url=f"sqlite:///{tmp}/tx.db", base_url="http://b/fhir")
        store = store_from_settings(settings)
        await store.open()
        ix = build_interactions(settings, store)
        try:
            await find_matches(ix, "Patient", "identifier=x", None)
        except NotImplementedError:
            print("  (store benches skipped: conditional matching has not landed)")
            await store.close()
            return
        engine = Engine()
        bundles = [engine.map(parser.parse(raw)).bundle() for raw in messages]
        carried = sum(len(b["entry"]) for b in bundles[WARM:])
        for bundle in bundles:  # inbound stamps the Provenance at receipt; do the same
            for entry in bundle["entry"]:
                if entry["resource"]["resourceType"] == "Provenance":
                    entry["resource"]["recorded"] = "2024-01-01T00:00:00Z"
        for bundle in bundles[:WARM]:
            await ix.dispatch(FhirRequest("POST", "", settings.fhir_base, resource=bundle))
        warm_versions = await data_versions(store)
        start, cpu = time.perf_counter(), time.process_time()
        for bundle in bundles[WARM:]:
            await ix.dispatch(FhirRequest("POST", "", settings.fhir_base, resource=bundle))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        timed(f"tx in-process ({label})", len(bundles) - WARM, seconds, carried,
              await data_versions(store) - warm_versions, cpu)
        await store.close()
    for audit in (True, False):
        if audit_on or not audit:
            await bench_mllp(messages, label, carried, audit)
    if connections > 1:
        await bench_mllp(messages, label, carried, False, connections)


async def bench_mllp(messages: list[bytes], label: str, carried: int, audit: bool,
                     connections: int = 1) -> None:
    """`connections` senders at once, each sending its share in order, one message in
    flight per connection (each waits for its ACK)."""
    from fhirpm.app import build_interactions
    from fhirpm.config import Hl7Settings, Settings
    from fhirpm.hl7v2.bridge import Bridge
    from fhirpm.hl7v2.mllp import MllpClient
    from fhirpm.storage.factory import store_from_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(store_url=f"sqlite:///{tmp}/mllp.db", base_url="http://b/fhir")
        store = store_from_settings(settings)
        await store.open()
        ix = build_interactions(settings, store)
        if not audit:
            ix.observer = None
        bridge = Bridge(ix, Hl7Settings(port=0), settings.fhir_base, outbound=False)
        await bridge.start()
        try:
            async with MllpClient("127.0.0.1", bridge.server.port) as client:
                for raw in messages[:WARM]:
                    await client.send(raw)
            warm_versions = await data_versions(store)
            timed_part = messages[WARM:]

            async def sender(share: list[bytes]) -> None:
                async with MllpClient("127.0.0.1", bridge.server.port) as client:
                    for raw in share:
                        await client.send(raw)

            start, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(sender(timed_part[n::connections])
                                   for n in range(connections)))
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            what = "audit on" if audit else "audit off"
            how = f"{connections} connections" if connections > 1 else "ACK after commit"
            timed(f"MLLP, {how}, {what}", len(timed_part), seconds, carried,
                  await data_versions(store) - warm_versions, cpu)
        finally:
            await bridge.stop()
            await store.close()

# -- issue #7: MLLP against REST ingest, two real servers, alternating slices ----------------


@dataclass
class Slice:
    resources: int
    seconds: float
    cpu: float  # the server process's CPU seconds meanwhile (all its threads)

    @property
    def rate(self) -> float:
        return self.resources / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.resources * 1e6


def bench_vs_rest(data: Path, pairs: int, per_slice: int, audit: bool) -> float | None:
    """Alternate a REST slice (every Synthea patient Bundle once) and an MLLP slice
    (`per_slice` kitchen-sink messages); print both and the ratio; its median."""
    from bench import data as bench_data
    from bench.ingest_bench import post_all
    from bench.server import ServerProcess, cpu_seconds, free_port

    files = bench_data.synthea_files()
    shared = [p.read_bytes() for p in files
              if p.name.startswith(("hospitalInformation", "practitionerInformation"))]
    patients = [p.read_bytes() for p in files
                if not p.name.startswith(("hospitalInformation", "practitionerInformation"))]
    per_round = sum(len(json.loads(b)["entry"]) for b in patients)
    messages = sample_messages(data, WARM + pairs * per_slice)
    carried = _carried(messages)
    env = {"FHIRPM_AUDIT__ENABLED": "true" if audit else "false"}
    args = argparse.Namespace(duration=60.0)
    what = "audit trail on" if audit else "audit trail off"
    print(f"MLLP kitchen-sink vs REST Synthea transaction ingest, {what} "
          f"(load average {os.getloadavg()[0]:.1f}):", flush=True)
    with tempfile.TemporaryDirectory(prefix="fhirpm-bench-hl7-") as tmp:
        work = Path(tmp)
        mllp_port = free_port()
        rest = ServerProcess.fhirpm(f"sqlite:///{work}/rest.db", work / "rest.log", env=env)
        mllp = ServerProcess.fhirpm(f"sqlite:///{work}/mllp.db", work / "mllp.log", env={
            **env, "FHIRPM_HL7__ENABLED": "true", "FHIRPM_HL7__PORT": str(mllp_port)})
        with rest, mllp:
            post_all(rest.port, shared, 1, args)  # what the patients' references resolve to
            asyncio.run(_send(mllp_port, messages[:WARM]))
            ratios, cpu_ratios = [], []
            for n in range(pairs):
                before = cpu_seconds(rest.pid)
                start = time.perf_counter()
                post_all(rest.port, patients, 2, args)
                r = Slice(per_round, time.perf_counter() - start, cpu_seconds(rest.pid) - before)
                part = messages[WARM + n * per_slice:WARM + (n + 1) * per_slice]
                before = cpu_seconds(mllp.pid)
                start = time.perf_counter()
                asyncio.run(_send(mllp_port, part))
                m = Slice(sum(carried[WARM + n * per_slice:WARM + (n + 1) * per_slice]),
                          time.perf_counter() - start, cpu_seconds(mllp.pid) - before)
                ratios.append(m.rate / r.rate)
                cpu_ratios.append(r.cpu_us / m.cpu_us)
                print(f"  pair {n + 1}: REST {r.rate:7.1f} resources/s {r.cpu_us:6.0f} us CPU/res"
                      f" | MLLP {len(part) / m.seconds:5.1f} msg/s {m.rate:7.1f} resources/s "
                      f"{m.cpu_us:6.0f} us CPU/res | ratio {m.rate / r.rate:.2f}", flush=True)
    median = statistics.median(ratios)
    verdict = "meets" if median >= TARGET else "BELOW"
    print(f"  MLLP / REST resources/s, {what}: median {median:.2f} "
          f"[{min(ratios):.2f}-{max(ratios):.2f}] ({verdict} the {TARGET} target); by server "
          f"CPU per resource (REST / MLLP; steadier under load): median "
          f"{statistics.median(cpu_ratios):.2f} [{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}]",
          flush=True)
    return median


def _carried(messages: list[bytes]) -> list[int]:
    """Resources each message carries once mapped (as the other rows count them)."""
    engine = Engine()
    return [len(engine.map(parser.parse(raw)).resources) for raw in messages]


async def _send(port: int, messages: list[bytes]) -> None:
    from fhirpm.hl7v2.mllp import MllpClient

    async with MllpClient("127.0.0.1", port) as client:
        for raw in messages:
            ack_ = (await client.send(raw))[0]
            if "MSA|AA|" not in ack_:
                raise SystemExit(f"MLLP message refused: {ack_!r}")


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--sets", default="samples,small,rest",
                    help="which rows: samples (kitchen-sink), small, rest (MLLP vs REST "
                         "ingest, two servers); any of them, comma-separated")
    ap.add_argument("--connections", type=int, default=4,
                    help="senders at once for the last MLLP row (1: no such row)")
    ap.add_argument("--no-audit-on", action="store_true",
                    help="skip the MLLP row with the audit trail on")
    ap.add_argument("--pairs", type=int, default=3,
                    help="REST / MLLP slice pairs per audit setting (set `rest`)")
    ap.add_argument("--slice", type=int, default=120,
                    help="kitchen-sink messages per MLLP slice (set `rest`)")
    ap.add_argument("--data", default=os.environ.get(
        "FHIRPM_SHARED_DATA", str(here.parent / "shared" / "data")) + "/hl7v2")
    args = ap.parse_args()
    sets = set(args.sets.split(","))
    data = Path(args.data)
    print(f"HL7 v2 bench, {args.messages} messages per row, cpus={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if "samples" not in sets:
        pass
    elif data.is_dir():
        big = sample_messages(data, args.messages)
        print(f"kitchen-sink samples (avg {sum(map(len, big)) // len(big)} bytes):")
        bench_parse(big)
        bench_map(big)
        asyncio.run(bench_store(big, "samples", args.connections, not args.no_audit_on))
    else:
        print(f"no samples at {data}: kitchen-sink rows skipped")
    if "small" in sets:
        small = small_messages(args.messages)
        print("small ADT^A08 / SIU^S12:")
        bench_parse(small)
        bench_map(small)
        asyncio.run(bench_store(small, "small", args.connections, not args.no_audit_on))
    if "rest" in sets and data.is_dir():
        for audit in (True, False):
            if not (audit and args.no_audit_on):
                bench_vs_rest(data, args.pairs, args.slice, audit)


if __name__ == "__main__":
    main()
