"""Architecture guard: lower layers never import higher ones (docs/architecture.md).

Each package may import only packages of its own or lower rank. Imports inside functions
count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fhirpm"

# rank: a module may import modules of equal or lower rank only
RANKS = {
    "fhirpm.errors": 0, "fhirpm.config": 0, "fhirpm.logs": 0,
    "fhirpm.fhir": 1,
    "fhirpm.search": 2, "fhirpm.auth.scopes": 2,
    # pure data the resource server's access policy (repository.access) works with
    "fhirpm.auth.errors": 2, "fhirpm.auth.principal": 2,
    "fhirpm.storage": 3,
    "fhirpm.repository": 4, "fhirpm.changes": 4, "fhirpm.jobs": 4,
    "fhirpm.operations": 5, "fhirpm.audit": 5, "fhirpm.auth": 5,
    "fhirpm.workflows": 6, "fhirpm.hl7v2": 6, "fhirpm.loader": 6,
    "fhirpm.scheduling": 6,
    "fhirpm.api": 7, "fhirpm.ops": 7,
    "fhirpm.app": 8, "fhirpm.cli": 9,
}


def rank_of(module: str) -> int | None:
    best = None
    for prefix, rank in RANKS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[0])):
            best = (prefix, rank)
    return best[1] if best else None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes under `if TYPE_CHECKING:`: type-only imports add no runtime dependency."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.startswith("fhirpm")}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_no_upward_imports() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        own = rank_of(name)
        if own is None:
            continue
        for imported in imports_of(path):
            other = rank_of(imported)
            if other is not None and other > own:
                violations.append(f"{name} (rank {own}) imports {imported} (rank {other})")
    assert not violations, "\n".join(sorted(violations))


def test_storage_adapters_do_not_import_each_other() -> None:
    adapters = [p for p in (PACKAGE / "storage").iterdir() if p.is_dir() and
                not p.name.startswith("_")]
    for adapter in adapters:
        for path in adapter.rglob("*.py"):
            for imported in imports_of(path):
                for other in adapters:
                    if other != adapter:
                        assert not imported.startswith(f"fhirpm.storage.{other.name}"), (
                            f"{module_name(path)} imports {imported}")
