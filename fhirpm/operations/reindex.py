"""`$reindex` (system and type level, POST): re-extract the search index of every resource
of the given types (all types at system level) in the background, and `$reindex-status`
(GET, `?job=`) to follow it. The job machinery (leases, resumption, custom
SearchParameters) is `repository.reindex`; this module only speaks FHIR.

Answers are Parameters: `job` (the key), `status` (pending|running|done), `done`, `total`.
`$reindex` answers 202 Accepted with `Content-Location` pointing at the status.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository import reindex
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions

DEFINITION = "http://fhirpm.org/OperationDefinition/reindex"


def install(interactions: Interactions) -> None:
    register(interactions, START)
    register(interactions, STATUS)


async def _start(ix: Interactions, req: FhirRequest, type: str | None,
                 id: str | None) -> FhirResponse:
    types = [type] if type is not None else sorted(RESOURCE_TYPES)
    key = await reindex.start(ix, types)
    job = await reindex.status(ix, key)
    location = f"{req.base}/$reindex-status?job={quote(key, safe='')}"
    return FhirResponse(202, jsonio.dumps(_parameters(key, job or {})),
                        {"Content-Location": location})


async def _status(ix: Interactions, req: FhirRequest, type: str | None,
                  id: str | None) -> FhirResponse:
    key = req.param("job")
    if not key:
        raise FhirError(Category.REQUIRED, "$reindex-status needs ?job=<key>",
                        expression=("job",))
    job = await reindex.status(ix, key)
    if job is None:
        raise FhirError(Category.NOT_FOUND, f"no reindex job {key!r}")
    return FhirResponse(200, jsonio.dumps(_parameters(key, job)))


def _parameters(key: str, job: dict[str, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "job", "valueString": key},
                                    {"name": "status", "valueCode": job.get("status",
                                                                            "pending")},
                                    {"name": "done", "valueInteger": job.get("done", 0)}]
    if job.get("total") is not None:
        params.append({"name": "total", "valueInteger": job["total"]})
    if job.get("url"):
        params.append({"name": "url", "valueUri": job["url"]})
    return {"resourceType": "Parameters", "parameter": params}


START = OperationSpec("reindex", DEFINITION, _start, system=True, type=True,
                      affects_state=True,
                      documentation="Rebuild the search index of a type (or all) in the "
                                    "background; follow it with $reindex-status")
STATUS = OperationSpec("reindex-status", DEFINITION + "-status", _status, system=True,
                       documentation="Progress of a $reindex or SearchParameter job")
