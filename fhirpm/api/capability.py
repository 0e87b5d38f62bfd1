"""The CapabilityStatement at GET [base]/metadata, generated from what is registered.

Nothing here is a hand-kept list: the interactions come from the router's routes (a PATCH
handler on `Type/id` means `patch`), the search parameters from the registry the search
package wires as `repo.registry` (none listed when it is absent), the operations from the
operation registry, and the rest from facts packages declare in `Interactions.features`:

    conditionalCreate, conditionalRead, conditionalUpdate, conditionalDelete,
    searchInclude, searchRevInclude, referencePolicy    -> every rest.resource
    patchFormat                                         -> the statement itself
    security (a CapabilityStatement.rest.security)      -> rest.security (SMART's
                                                           oauth-uris extension)

The statement is rebuilt only when one of those changes (its fingerprint), carries an
ETag, answers If-None-Match with 304 and may be cached by clients. It needs no
authentication (SMART clients read it before they have a token).
"""

from __future__ import annotations

import hashlib
from typing import Any

from fhirpm import __version__
from fhirpm.fhir import jsonio
from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.operations.registry import OperationSpec, registered
from fhirpm.repository.interactions import (
    FhirRequest,
    FhirResponse,
    Interactions,
    allowed_methods,
)
from fhirpm.repository.service import now_instant, parse_etag

FORMATS = ["application/fhir+json", "json"]
_RESOURCE_FEATURES = ("conditionalCreate", "conditionalRead", "conditionalUpdate",
                      "conditionalDelete", "referencePolicy", "searchInclude",
                      "searchRevInclude")
_DEFAULTS: dict[str, Any] = {"conditionalCreate": False, "conditionalRead": "not-supported",
                             "conditionalUpdate": False, "conditionalDelete": "not-supported",
                             "referencePolicy": ["literal", "logical"]}
# (interaction code, path shape, method) for type-level rest.resource.interaction
_TYPE_INTERACTIONS = (
    ("read", "T/I", "GET"), ("vread", "T/I/_history/V", "GET"), ("update", "T/I", "PUT"),
    ("patch", "T/I", "PATCH"), ("delete", "T/I", "DELETE"),
    ("history-instance", "T/I/_history", "GET"), ("history-type", "T/_history", "GET"),
    ("create", "T", "POST"), ("search-type", "T", "GET"),
)
CACHE_CONTROL = "public, max-age=300"


def install(interactions: Interactions) -> None:
    """Serve GET [base]/metadata."""
    interactions.capabilities = CapabilityStatement(interactions)


class CapabilityStatement:
    """Builds the statement (when what it describes changed) and serves it."""

    def __init__(self, interactions: Interactions) -> None:
        self.ix = interactions
        self._fingerprint: Any = None
        self._body = b""
        self._etag = ""

    async def __call__(self, req: FhirRequest) -> FhirResponse:
        self._refresh(req.base, await _not_yet_searchable(self.ix))
        headers = {"ETag": self._etag, "Cache-Control": CACHE_CONTROL}
        asked = req.headers.get("if-none-match")
        if asked and parse_etag(self._etag) in {parse_etag(t) for t in asked.split(",")}:
            return FhirResponse(304, None, headers)
        return FhirResponse(200, self._body, headers)

    def _refresh(self, base: str, hidden: frozenset[str]) -> None:
        registry = getattr(self.ix.repo, "registry", None)
        fingerprint = (
            base, id(registry), hidden,
            getattr(registry, "revision", len(getattr(registry, "by_url", ()))),
            tuple(sorted(self.ix.operations)), repr(sorted(self.ix.features.items())),
            self.ix.search_handler is not None, self.ix.system_post is not None,
            tuple(sorted(allowed_methods(shape) for _, shape, _ in _TYPE_INTERACTIONS)),
        )
        if fingerprint == self._fingerprint:
            return
        self._body = jsonio.dumps(build(self.ix, base, registry, hidden))
        self._etag = f'W/"{hashlib.sha256(self._body).hexdigest()[:16]}"'
        self._fingerprint = fingerprint


async def _not_yet_searchable(ix: Interactions) -> frozenset[str]:
    """URLs of custom SearchParameters whose reindex job has not finished: a parameter is
    listed only once searching it finds everything it should."""
    if ix.search_handler is None:
        return frozenset()
    from fhirpm.repository import reindex

    return frozenset(await reindex.pending(ix))


def build(ix: Interactions, base: str, registry: Any = None,
          hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The CapabilityStatement as a dict (see the module docstring for its sources)."""
    operations = registered(ix)
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now_instant()[:19] + "Z",
        "publisher": "fhirpm",
        "kind": "instance",
        "software": {"name": "fhirpm", "version": __version__},
        "implementation": {"description": "fhirpm FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": FORMATS,
    }
    if ix.features.get("patchFormat"):
        statement["patchFormat"] = list(ix.features["patchFormat"])
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": [_resource(ix, type, registry, operations, hidden)
                     for type in sorted(RESOURCE_TYPES)],
        "interaction": _system_interactions(ix),
    }
    if ix.features.get("security"):
        rest = {"mode": "server", "security": ix.features["security"],
                **{k: v for k, v in rest.items() if k != "mode"}}
    system_ops = [_operation(op) for op in operations if op.system]
    if system_ops:
        rest["operation"] = system_ops
    statement["rest"] = [rest]
    return statement


def _resource(ix: Interactions, type: str, registry: Any,
              operations: list[OperationSpec], hidden: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{type}",
        "interaction": [{"code": code} for code, shape, method in _TYPE_INTERACTIONS
                        if method in allowed_methods(shape)
                        and (code != "search-type" or ix.search_handler is not None)],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
    }
    for key in _RESOURCE_FEATURES:
        value = ix.features.get(key, _DEFAULTS.get(key))
        if value is not None:
            out[key] = value
    params = _search_params(registry, type, hidden)
    if params:
        out["searchParam"] = params
    ops = [_operation(op) for op in operations
           if (op.type or op.instance) and (not op.types or type in op.types)]
    if ops:
        out["operation"] = ops
    return out


def _search_params(registry: Any, type: str,
                   hidden: frozenset[str]) -> list[dict[str, Any]]:
    if registry is None:
        return []
    params = registry.for_type(type)
    return [{"name": code, "definition": p.url, "type": p.type}
            for code, p in sorted(params.items()) if p.url not in hidden]


def _operation(op: OperationSpec) -> dict[str, Any]:
    out = {"name": op.name, "definition": op.definition}
    if op.documentation:
        out["documentation"] = op.documentation
    return out


def _system_interactions(ix: Interactions) -> list[dict[str, str]]:
    codes = []
    if ix.system_post is not None:
        codes += ["transaction", "batch"]
    if "GET" in allowed_methods("_history"):
        codes.append("history-system")
    if ix.search_handler is not None and "GET" in allowed_methods(""):
        codes.append("search-system")
    return [{"code": c} for c in codes]
