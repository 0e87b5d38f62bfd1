"""Write-time index extraction cost over the Synthea sample (and FHIRPath coverage).

    .venv/bin/python -m bench.extraction [SYNTHEA_DIR]

Prints the compiled-expression coverage of the official R4 parameters, then the mean
extraction time per resource (all parameters of each type, as `RegistryIndexer` runs them
on every write), by type and overall, and the entries produced.
"""

from __future__ import annotations

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


if __name__ == "__main__":
    main(sys.argv[1:])
