"""Operation inputs and outputs: the query string and a Parameters body read as one list of
named values, and Parameters / Bundle answers. Every bad input is a 400 naming it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError

if TYPE_CHECKING:
    from fhirpm.repository.interactions import FhirRequest


class Inputs:
    """Named operation inputs: `values[name]` in order (strings from the URL, a Parameters
    value[x] or resource from the body)."""

    def __init__(self, req: FhirRequest) -> None:
        self.values: dict[str, list[Any]] = {}
        for key, value in req.params:
            if not key.startswith("_"):
                self.values.setdefault(key, []).append(value)
        if req.method == "POST" and (req.body or req.resource is not None):
            self._body(req.parsed_body())

    def _body(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise FhirError(Category.STRUCTURE, "The body must be a FHIR resource")
        if body.get("resourceType") != "Parameters":
            self.values.setdefault("appointment", []).append(body)  # a bare Appointment
            return
        for p in body.get("parameter") or ():
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise FhirError(Category.STRUCTURE, "Every Parameters.parameter needs a name",
                                expression=("Parameters.parameter",))
            value = p.get("resource", next((v for k, v in p.items() if k.startswith("value")),
                                           None))
            self.values.setdefault(p["name"], []).append(value)

    def one(self, name: str) -> Any:
        found = self.values.get(name) or []
        if len(found) > 1:
            raise FhirError(Category.INVALID, f"{name} may be given only once",
                            expression=(name,))
        return found[0] if found else None

    def text(self, name: str) -> str | None:
        value = self.one(name)
        if isinstance(value, dict) and "reference" in value:  # valueReference
            value = value["reference"]
        if value is not None and not isinstance(value, str):
            raise FhirError(Category.INVALID, f"{name} must be a string", expression=(name,))
        return value or None

    def texts(self, name: str) -> list[str]:
        out: list[str] = []
        for value in self.values.get(name) or ():
            if isinstance(value, dict):  # valueCoding / valueReference
                value = value.get("reference") or "|".join(
                    x for x in (value.get("system"), value.get("code")) if x)
            if not isinstance(value, str):
                raise FhirError(Category.INVALID, f"{name} must be a string",
                                expression=(name,))
            out.extend(v for v in value.split(",") if v)
        return out

    def flag(self, name: str) -> bool:
        value = self.one(name)
        if value in (None, False, "false"):
            return False
        if value in (True, "true"):
            return True
        raise FhirError(Category.INVALID, f"{name} must be true or false", expression=(name,))

    def day(self, name: str) -> date | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise FhirError(Category.INVALID, f"{name} must be a date (YYYY-MM-DD), not "
                            f"{value!r}", expression=(name,)) from None

    def instant(self, name: str) -> datetime | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise FhirError(Category.INVALID, f"{name} must be a date or dateTime, not "
                            f"{value!r}", expression=(name,)) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parameters(**values: int | str | bool) -> dict[str, Any]:
    out = []
    for name, value in values.items():
        kind = ("valueBoolean" if isinstance(value, bool) else
                "valueInteger" if isinstance(value, int) else "valueString")
        out.append({"name": name.replace("_", "-"), kind: value})
    return {"resourceType": "Parameters", "parameter": out}


def instant_text(moment: datetime) -> str:
    """A UTC instant as FHIR text with seconds: 2026-12-03T08:00:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
