"""The patch interaction: PATCH [base]/Type/id.

Two patch formats, told apart by the body's shape (the HTTP layer has already refused
media types other than JSON and `application/json-patch+json`):

    a JSON array              JSON Patch (RFC 6902, via the `jsonpatch` package)
    a Parameters resource     FHIRPath Patch (fhirpm.fhir.fhirpath_patch)
    a Binary resource         either of the above, base64-encoded: how a PATCH entry
                              carries a JSON Patch inside a transaction Bundle

`If-Match` is honoured; the patched resource goes through the same write path as an
update (validated, new version, method PATCH), so an invalid result is refused with the
validator's paths and nothing is written. Patching may not change the type or the id.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jsonpatch
import jsonpointer

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import fhirpath_patch, jsonio
from fhirpm.repository.interactions import (
    FhirRequest,
    FhirResponse,
    Interactions,
    add_route,
    write_response,
)
from fhirpm.repository.service import check_if_match, check_type, version_headers

JSON_PATCH = "application/json-patch+json"
FORMATS = (JSON_PATCH, "application/fhir+json")  # the latter: FHIRPath Patch


def install(interactions: Interactions) -> None:
    add_route("T/I", "PATCH", patch)
    interactions.features["patchFormat"] = list(FORMATS)


async def patch(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    type, id = parts
    check_type(type)
    apply = patcher(req.parsed_body())
    async with ix.repo.unit(req.uow) as unit:
        current = await unit.current(type, id)
        if current is None:
            raise FhirError(Category.NOT_FOUND, f"{type}/{id} is not known")
        if current.deleted:
            raise FhirError(Category.DELETED, f"{type}/{id} was deleted",
                            headers=version_headers(current))
        check_if_match(current, req.headers.get("if-match"), type, id)
        patched = apply(jsonio.loads(current.body))
        _check_identity(patched, type, id)
        result = await ix.repo.replace(unit, current, patched, "PATCH")
    return write_response(req, result)


def patcher(document: Any):
    """A function applying `document` (any supported patch format) to a resource dict."""
    if isinstance(document, dict) and document.get("resourceType") == "Binary":
        document = _unwrap_binary(document)
    if isinstance(document, list):
        return _json_patch(document)
    if isinstance(document, dict) and document.get("resourceType") == "Parameters":
        return lambda resource: fhirpath_patch.apply(resource, document)
    raise FhirError(Category.INVALID,
                    "A patch is a JSON Patch array (application/json-patch+json) or a "
                    "FHIRPath Patch Parameters resource (application/fhir+json)")


def _unwrap_binary(binary: dict[str, Any]) -> Any:
    data = binary.get("data")
    if not isinstance(data, str):
        raise FhirError(Category.INVALID, "A Binary patch needs base64 data",
                        expression=("Binary.data",))
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise FhirError(Category.INVALID, "Binary.data is not valid base64",
                        expression=("Binary.data",)) from None
    return jsonio.loads(decoded)


def _json_patch(operations: list[Any]):
    try:
        compiled = jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError,
            AttributeError) as exc:
        raise FhirError(Category.INVALID, f"Invalid JSON Patch: {exc}") from None

    def apply(resource: dict[str, Any]) -> dict[str, Any]:
        try:
            return compiled.apply(resource, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise FhirError(Category.UNPROCESSABLE,
                            f"JSON Patch test failed: {_short(exc)}") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException,
                TypeError, AttributeError, IndexError, KeyError) as exc:
            raise FhirError(Category.UNPROCESSABLE,
                            f"JSON Patch cannot be applied: {_short(exc)}") from None

    return apply


def _short(exc: Exception, limit: int = 200) -> str:
    """The library's message, cut short: some quote the whole document they worked on."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_identity(patched: Any, type: str, id: str) -> None:
    if not isinstance(patched, dict):
        raise FhirError(Category.UNPROCESSABLE, "The patch replaced the whole resource with "
                        "something that is not a resource")
    if patched.get("resourceType") != type:
        raise FhirError(Category.UNPROCESSABLE, "A patch may not change resourceType",
                        expression=(f"{type}.resourceType",))
    if patched.get("id") != id:
        raise FhirError(Category.UNPROCESSABLE, "A patch may not change the id",
                        expression=(f"{type}.id",))
