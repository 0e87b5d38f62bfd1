"""Write-time index extraction cost over the Synthea sample (and FHIRPath coverage).

    .venv/bin/python -m bench.extraction [SYNTHEA_DIR]

Prints the compiled-expression coverage of the official R4 parameters, then the mean
extraction time per resource (all parameters of each type, as `RegistryIndexer` runs them
on every write), by type and overall, and the entries produced; then, when fhirpathpy is
installed, the cost of evaluating the same expressions with it over a sample (the ratio
is the figure to trust on a busy machine: both run in the same conditions).
"""

from __future__ import annotations

import gc
import sys
import time
from collections import Counter
from pathlib import Path

from fhirpm.fhir import jsonio
from fhirpm.search.extract import RegistryIndexer, compile_coverage
from fhirpm.search.registry import Registry

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fhir" / "synthea"


def load(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        bundle = jsonio.loads(path.read_bytes())
        out.extend(e["resource"] for e in bundle.get("entry", ()) if "resource" in e)
    return out


def main(argv: list[str]) -> None:
    registry = Registry.load_default()
    compiled, failed = compile_coverage(registry)
    print(f"expressions compiled: {compiled} (parameter x base type), failed: {len(failed)}")
    for name, why in failed.items():
        print(f"  {name}: {why}")
    resources = load(Path(argv[0]) if argv else DEFAULT)
    # The corpus is 15 MB of long-lived dicts; a server holds one resource at a time, so keep
    # the collector from re-scanning the corpus on every cycle (it would dominate the timing).
    gc.collect()
    gc.freeze()
    indexer = RegistryIndexer(registry)
    for r in resources:  # warm the per-type plans (compiled once per process)
        indexer.extract(r["resourceType"], r)
    by_type: Counter[str] = Counter()
    count: Counter[str] = Counter()
    entries = 0
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for r in resources:
            entries += len(indexer.extract(r["resourceType"], r))
        best = min(best, time.process_time() - start)
    for r in resources:
        t0 = time.process_time()
        indexer.extract(r["resourceType"], r)
        by_type[r["resourceType"]] += time.process_time() - t0
        count[r["resourceType"]] += 1
    print(f"{len(resources)} resources, {entries // 5} index entries, "
          f"mean {best / len(resources) * 1e6:.1f} us per resource (best of 5, CPU time)")
    for t, n in count.most_common():
        print(f"  {t:22} {n:5}  {by_type[t] / n * 1e6:7.1f} us")
    compare_with_fhirpathpy(registry, indexer, resources[::10])


def compare_with_fhirpathpy(registry: Registry, indexer: RegistryIndexer,
                            sample: list[dict]) -> None:
    try:
        import fhirpathpy
        from fhirpathpy.models import models
    except ImportError:
        return
    compiled = {}
    for r in sample:
        for p in registry.for_type(r["resourceType"]).values():
            if p.expression and "resolve()" not in p.expression and p.expression not in compiled:
                compiled[p.expression] = fhirpathpy.compile(p.expression, models["r4"])
    start = time.process_time()
    for r in sample:
        for p in registry.for_type(r["resourceType"]).values():
            if p.expression in compiled:
                compiled[p.expression](r)
    theirs = (time.process_time() - start) / len(sample)
    start = time.process_time()
    for r in sample:
        indexer.extract(r["resourceType"], r)
    ours = (time.process_time() - start) / len(sample)
    print(f"sample of {len(sample)}: fhirpathpy (expressions only, no resolve()) "
          f"{theirs * 1e6:.0f} us per resource, RegistryIndexer (with conversion) "
          f"{ours * 1e6:.0f} us: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
