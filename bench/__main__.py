"""`python -m bench [NAME [OPTIONS]]`: run one benchmark, or every one in turn.

Subcommands are the `bench/<name>_bench.py` modules; each exposes `main(argv) -> int`
(a `main()` reading sys.argv works too) and `DESCRIPTION` (else its docstring's first line).
`python -m bench read --duration 10` passes options to one benchmark; `python -m bench list`
shows what there is.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from types import ModuleType

import bench

ORDER = ("read", "ingest")  # the core figures first; other benchmarks follow by name


def benchmarks() -> dict[str, ModuleType]:
    names = [m.name.removesuffix("_bench") for m in pkgutil.iter_modules(bench.__path__)
             if m.name.endswith("_bench")]
    ordered = [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)
    return {n: importlib.import_module(f"bench.{n}_bench") for n in ordered}


def describe(module: ModuleType) -> str:
    text = getattr(module, "DESCRIPTION", None) or (module.__doc__ or "").strip()
    return text.splitlines()[0] if text else ""


def run_one(name: str, module: ModuleType, argv: list[str]) -> int:
    if inspect.signature(module.main).parameters:
        return module.main(argv) or 0
    sys.argv = [f"python -m bench {name}", *argv]  # a main() that parses sys.argv itself
    return module.main() or 0


def main(argv: list[str]) -> int:
    found = benchmarks()
    if argv and argv[0] in ("list", "-h", "--help"):
        print(__doc__.strip().splitlines()[0])
        for name, module in found.items():
            print(f"  {name:<12} {describe(module)}")
        return 0
    if argv and argv[0] in found:
        return run_one(argv[0], found[argv[0]], argv[1:])
    if argv:
        print(f"unknown benchmark {argv[0]!r}; try: python -m bench list", file=sys.stderr)
        return 2
    status = 0
    for name, module in found.items():
        print(f"\n# bench {name}: {describe(module)}", flush=True)
        status = max(status, run_one(name, module, []))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
