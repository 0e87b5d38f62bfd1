"""FHIR errors as data: one category table decides the HTTP status and the issue code.

Raise `FhirError` anywhere below the API; `fhirpm.api` renders it into an OperationOutcome in
exactly one place (and bundle processing reuses the same rendering per entry). This module
knows nothing of HTTP frameworks or storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Category(Enum):
    """What went wrong, with its HTTP status and OperationOutcome issue code."""

    INVALID = (400, "invalid")
    STRUCTURE = (400, "structure")
    VALUE = (400, "value")
    REQUIRED = (400, "required")
    UNPROCESSABLE = (422, "processing")
    BUSINESS_RULE = (422, "business-rule")
    NOT_FOUND = (404, "not-found")
    UNKNOWN_TYPE = (404, "not-supported")
    DELETED = (410, "deleted")
    METHOD_NOT_ALLOWED = (405, "not-supported")
    NOT_SUPPORTED = (400, "not-supported")
    CONFLICT = (409, "conflict")
    PRECONDITION_FAILED = (412, "conflict")
    MULTIPLE_MATCHES = (412, "multiple-matches")
    TOO_LARGE = (413, "too-long")
    UNSUPPORTED_MEDIA = (415, "not-supported")
    NOT_ACCEPTABLE = (406, "not-supported")
    UNAUTHORIZED = (401, "login")
    FORBIDDEN = (403, "forbidden")
    TOO_COSTLY = (403, "too-costly")
    THROTTLED = (429, "throttled")
    UNAVAILABLE = (503, "transient")
    INTERNAL = (500, "exception")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def code(self) -> str:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass
class FhirError(Exception):
    """An error a client caused or must hear about, rendered as an OperationOutcome."""

    category: Category
    diagnostics: str
    expression: tuple[str, ...] = ()
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.diagnostics)
        if not self.issues:
            self.issues = [Issue(self.category.code, self.diagnostics, expression=self.expression)]

    @property
    def status(self) -> int:
        return self.category.status

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information_outcome(message: str, code: str = "informational") -> dict[str, Any]:
    return operation_outcome([Issue(code, message, severity="information")])
