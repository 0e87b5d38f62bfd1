"""Name a request's FHIR interaction and resource type from its method and path (metrics
labels).

Labels must stay few: a type that is not an R4 resource type is "unknown" and paths outside
the FHIR API are "auth", "ops" or "other", so no client can grow the metric families by
inventing paths. POST [base] is a batch or a transaction, which only the body tells: the
bundle handler names it through `context.label_interaction`.
"""

from __future__ import annotations

from fhirpm.fhir.types import RESOURCE_TYPES

OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_INSTANCE = {"GET": "read", "HEAD": "read", "PUT": "update", "PATCH": "patch",
             "DELETE": "delete"}


def classify(method: str, path: str, mount: str = "/fhir",
             label: str | None = None) -> tuple[str, str]:
    """(interaction, resource type or "") for a request."""
    n = len(mount)
    if path.startswith(mount) and path[n:n + 1] == "/":  # one resource: "/fhir/Patient/1"
        first, slash, second = path[n + 1:].partition("/")
        if (slash and first and second and "/" not in second and "$" not in first
                and "$" not in second and second[0] != "_" and method != "OPTIONS"
                and first != ".well-known"):
            return _INSTANCE.get(method, "other"), _type(first)
    return _walk(method, path, mount, label)


def _walk(method: str, path: str, mount: str, label: str | None) -> tuple[str, str]:
    """`classify` without its short cut: every path's general answer."""
    if not path.startswith(mount) or path[len(mount):len(mount) + 1] not in ("", "/"):
        if path in OPS_PATHS:
            return "ops", ""
        if path == "/auth" or path.startswith("/auth/"):
            return "auth", ""
        return "other", ""
    rest = path[len(mount) + 1:]
    parts = rest.split("/") if rest else []
    if "" in parts:  # "Patient//1/": empty segments do not count
        parts = [p for p in parts if p]
    operation = "$" in rest
    if (len(parts) == 2 and not operation and parts[1][0] != "_" and method != "OPTIONS"
            and parts[0] != ".well-known"):  # the commonest shape: one resource
        return _INSTANCE.get(method, "other"), _type(parts[0])
    if method == "OPTIONS":
        return "options", ""
    return _fhir(method, parts, label, operation)


def _type(name: str) -> str:
    return name if name in RESOURCE_TYPES else "unknown"


def _fhir(method: str, parts: list[str], label: str | None,
          operation: bool) -> tuple[str, str]:
    reading = method in ("GET", "HEAD")
    n = len(parts)
    if n == 0:
        if method == "POST":
            return label or "batch-or-transaction", ""
        return ("search-system", "") if reading else ("other", "")
    first = parts[0]
    if operation and any(p.startswith("$") for p in parts):
        return "operation", _type(first) if n > 1 else ""
    if n == 1:
        return _system_or_type(method, first, reading)
    kind = _type(first)
    second = parts[1]
    if n == 2:
        if second == "_search":
            return "search-type", kind
        if second == "_history":
            return "history", kind
        if first == ".well-known":
            return "auth", ""
        return _INSTANCE.get(method, "other"), kind
    if n == 3:
        if parts[2] == "_history":
            return "history", kind
        return ("search-compartment", _type(parts[2])) if reading else ("other", kind)
    if n == 4 and parts[2] == "_history":
        return "vread", kind
    return "other", kind


def _system_or_type(method: str, first: str, reading: bool) -> tuple[str, str]:
    if first == "metadata":
        return "metadata", ""
    if first == "_history":
        return "history", ""
    if first == "_search":
        return "search-system", ""
    if reading:
        return "search-type", _type(first)
    return ("create", _type(first)) if method == "POST" else ("other", _type(first))
