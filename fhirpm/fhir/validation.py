"""Structural validation of a resource, once, at write time.

One small interface (`Validator.validate(resource, body) -> issues`) so the engine behind it
can change. The default engine is fhirkit-rs (exact R4 4.0.1, Rust, ~40 us per Synthea
resource here, every problem reported with its path); this module adds what it does not
check: id syntax, resources nested in `contained` and Bundle entries, which fhirkit-rs
does not descend into, and required value-set bindings (`fhir.bindings`).
"""

from __future__ import annotations

from typing import Any, Protocol

import fhirkit

from fhirpm.errors import Issue
from fhirpm.fhir import jsonio
from fhirpm.fhir.bindings import BindingChecker
from fhirpm.fhir.types import is_valid_id

_CODE_FOR_MESSAGE = (
    ("required element missing", "required"),
    ("unknown element", "structure"),
    ("is not a valid", "value"),
    ("expected a", "structure"),
)


def _issue_code(message: str) -> str:
    for fragment, code in _CODE_FOR_MESSAGE:
        if fragment in message:
            return code
    return "invalid"


class Validator(Protocol):
    def validate(self, resource: dict[str, Any], body: bytes) -> list[Issue]:
        """Problems with `resource` (whose exact serialisation is `body`); [] if valid."""


class FhirkitValidator:
    def __init__(self, bindings: BindingChecker | None = None) -> None:
        self.bindings = bindings or BindingChecker.load_default()

    def validate(self, resource: dict[str, Any], body: bytes) -> list[Issue]:
        issues = self._structural(body, resource.get("resourceType", "Resource"))
        issues.extend(self._nested(resource, resource.get("resourceType", "Resource")))
        issues.extend(self.bindings.check(resource))  # required value sets, nested too
        return issues

    def _structural(self, body: bytes, path: str) -> list[Issue]:
        try:
            found = fhirkit.validate(body)
        except fhirkit.ParseError as exc:
            return [Issue("structure", f"Unreadable resource: {exc}", expression=(path,))]
        return [
            Issue(_issue_code(i.message), f"{i.path}: {i.message}",
                  severity="error" if i.severity == "error" else "warning",
                  expression=(i.path,))
            for i in found
        ]

    def _nested(self, resource: dict[str, Any], path: str) -> list[Issue]:
        issues: list[Issue] = []
        rid = resource.get("id")
        if isinstance(rid, str) and not is_valid_id(rid):
            issues.append(Issue("value", f"{path}.id: {rid!r} is not a valid FHIR id "
                                "(1-64 of A-Z a-z 0-9 - .)", expression=(f"{path}.id",)))
        for n, inner in enumerate(resource.get("contained") or ()):
            if isinstance(inner, dict):
                issues.extend(self._child(inner, f"{path}.contained[{n}]"))
        if resource.get("resourceType") == "Bundle":
            for n, entry in enumerate(resource.get("entry") or ()):
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    issues.extend(self._child(entry["resource"], f"{path}.entry[{n}].resource"))
        return issues

    def _child(self, inner: dict[str, Any], path: str) -> list[Issue]:
        child_type = inner.get("resourceType", "Resource")
        found = self._structural(jsonio.dumps(inner), child_type)
        # re-root the child's paths under the parent's
        rerooted = [
            Issue(i.code, i.diagnostics.replace(child_type, path, 1), i.severity,
                  tuple(e.replace(child_type, path, 1) for e in i.expression))
            for i in found
        ]
        return rerooted + self._nested(inner, path)
