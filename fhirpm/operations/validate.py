"""$validate at type and instance level (Resource-validate): check a resource as a write
would, and never store it.

Input: the resource as the body, or a Parameters with `resource` (and optionally `mode`:
create | update | delete, and `profile`). Instance level with GET, or without a resource,
validates what is stored. The answer is always 200 with an OperationOutcome: the issues
found, or one information issue when there are none. Malformed requests (bad JSON, a body
for another type) are 400 like anywhere else.
"""

from __future__ import annotations

from typing import Any

from fhirpm.errors import Category, FhirError, Issue, operation_outcome
from fhirpm.fhir import jsonio
from fhirpm.operations.registry import OperationSpec
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from fhirpm.repository.service import check_body

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
MODES = ("create", "update", "delete")


async def validate(ix: Interactions, req: FhirRequest, type: str | None,
                   id: str | None) -> FhirResponse:
    assert type is not None  # the spec allows type and instance level only
    resource, mode, profile = _input(req, type)
    if mode == "delete":
        return await _can_delete(ix, type, id)
    if resource is None:
        if id is None:
            raise FhirError(Category.INVALID, "$validate needs a resource to validate")
        resource = jsonio.loads((await ix.repo.read(type, id)).body)
    check_body(type, resource)
    issues = ix.repo.validator.validate(resource, jsonio.dumps(resource))
    issues.extend(_mode_issues(resource, mode, type, id))
    if profile:
        issues.append(Issue("not-supported", f"Profile {profile} was not checked: only the "
                            "base R4 definition is enforced", severity="warning"))
    if not issues:
        issues = [Issue("informational", "Validation successful: no issues found",
                        severity="information")]
    return FhirResponse(200, jsonio.dumps(operation_outcome(issues)))


def _input(req: FhirRequest, type: str) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(resource, mode, profile) from the request body, which may be absent for GET."""
    if req.method == "GET" or (not req.body and req.resource is None):
        return None, req.param("mode"), req.param("profile")
    body = req.parsed_body()
    if not _is_parameters_wrapper(body, type):
        return body, req.param("mode"), req.param("profile")
    values: dict[str, Any] = {}
    for p in body.get("parameter", []):
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            values[p["name"]] = p.get("resource", _value(p))
    mode = values.get("mode")
    if mode is not None and mode not in MODES:
        raise FhirError(Category.INVALID, f"mode must be one of {', '.join(MODES)}, "
                        f"not {mode!r}", expression=("Parameters.parameter",))
    return values.get("resource"), mode, values.get("profile")


def _is_parameters_wrapper(body: Any, type: str) -> bool:
    """A Parameters body carries the input, unless it is itself what is being validated."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return False
    names = {p.get("name") for p in body.get("parameter", []) if isinstance(p, dict)}
    return type != "Parameters" or "resource" in names


def _value(parameter: dict[str, Any]) -> Any:
    return next((v for k, v in parameter.items() if k.startswith("value")), None)


def _mode_issues(resource: dict[str, Any], mode: str | None, type: str,
                 id: str | None) -> list[Issue]:
    body_id = resource.get("id")
    if mode == "update" and body_id is None:
        return [Issue("required", "An update must carry the resource id",
                      expression=(f"{type}.id",))]
    if id is not None and body_id is not None and body_id != id:
        return [Issue("invalid", f"The resource id {body_id!r} differs from {id!r} in the URL",
                      expression=(f"{type}.id",))]
    return []


async def _can_delete(ix: Interactions, type: str, id: str | None) -> FhirResponse:
    if id is None:
        raise FhirError(Category.INVALID, "mode=delete needs an instance: Type/id/$validate")
    await ix.repo.read(type, id)  # 404 / 410 when there is nothing to delete
    outcome = operation_outcome([Issue("informational", f"{type}/{id} can be deleted",
                                       severity="information")])
    return FhirResponse(200, jsonio.dumps(outcome))


SPEC = OperationSpec(name="validate", definition=DEFINITION, handler=validate, type=True,
                     instance=True,
                     documentation="Validate a resource against the R4 base definitions; "
                                   "nothing is stored")
