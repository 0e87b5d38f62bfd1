"""Framework-neutral FHIR REST: a `FhirRequest` in, a `FhirResponse` out.

The HTTP layer and bundle processing both call `Interactions.dispatch`, so a batch entry
behaves exactly like the same request over HTTP. Errors are raised as FhirError; the
caller renders them (HTTP: one place in fhirpm.api; bundles: per entry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError, information_outcome
from fhirpm.fhir import jsonio, shaping
from fhirpm.repository import access
from fhirpm.repository.service import (
    Repository,
    WriteResult,
    check_type,
    parse_etag,
    version_headers,
)
from fhirpm.search.values import IndexEntry
from fhirpm.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhirpm.auth.principal import Principal


@dataclass(frozen=True, slots=True)
class FhirRequest:
    method: str
    path: str  # relative to the FHIR base, no leading slash: "Patient/1/_history/2"
    base: str  # the FHIR base URL as the client sees it
    params: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes | None = None
    resource: Any = None  # an already-parsed body (bundle entries)
    uow: UnitOfWork | None = None  # set inside a transaction bundle
    assigned_id: str | None = None  # create: the id a transaction assigned (urn:uuid entries)
    # Who asks (fhirpm.repository.access): the HTTP edge sets the token's Principal, or an
    # Anonymous carrying the 401. None = a trusted internal caller (the CLI loader, HL7 v2
    # inbound), for which nothing is checked: never None for a request from outside.
    principal: Principal | access.Anonymous | None = None

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    def parsed_body(self) -> Any:
        if self.resource is not None:
            return self.resource
        if not self.body:
            raise FhirError(Category.INVALID, "This interaction needs a request body")
        return jsonio.loads(self.body)


@dataclass
class FhirResponse:
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    version: ResourceVersion | None = None  # the version read or written, for bundle entries
    entries: list[IndexEntry] | None = None  # a written version's index entries (audit)


Handler = Callable[["Interactions", FhirRequest, list[str]], Awaitable[FhirResponse]]
Operation = Callable[["Interactions", FhirRequest, str | None, str | None],
                     Awaitable[FhirResponse]]


class Interactions:
    """Routes a FhirRequest to the repository. Extended by registering handlers."""

    def __init__(self, repo: Repository, *, default_count: int = 20,
                 max_count: int = 1000) -> None:
        self.repo = repo
        self.default_count = default_count
        self.max_count = max_count
        self.operations: dict[str, Operation] = {}
        self.system_post: Handler | None = None  # bundles: set by repository.bundle
        self.search_handler: Handler | None = None  # set by the search package
        self.capabilities: Callable[[FhirRequest], Awaitable[FhirResponse]] | None = None
        # CapabilityStatement facts a package declares (e.g. conditionalCreate: True)
        self.features: dict[str, Any] = {}
        # sees every request: `observer.dispatch(ix, req, inner)` runs it (the audit trail,
        # fhirpm.audit.recorder; injected by the composition root, never imported here)
        self.observer: Any = None

    async def dispatch(self, req: FhirRequest) -> FhirResponse:
        if self.observer is not None:
            return await self.observer.dispatch(self, req, self._dispatch)
        return await self._dispatch(req)

    async def _dispatch(self, req: FhirRequest) -> FhirResponse:
        parts = [p for p in req.path.split("/") if p]
        shape = path_shape(parts)  # once per request: the access gate routes with it too
        if req.principal is not None:  # every caller but a trusted internal one
            return await access.guarded(self, req, parts, shape)
        handler = self._route(req.method, parts, shape)
        return await handler(self, req, parts)

    def _route(self, method: str, parts: list[str], shape: str | None = None) -> Handler:
        """The handler of `method` on `parts` (`shape`: `path_shape(parts)`, if known)."""
        if shape is None:
            shape = path_shape(parts)
        allowed = _ROUTES.get(shape)
        if allowed is None:
            raise FhirError(Category.NOT_FOUND, f"No FHIR endpoint at /{'/'.join(parts)}")
        handler = allowed.get(method)
        if handler is None:
            raise FhirError(Category.METHOD_NOT_ALLOWED,
                            f"{method} is not allowed on /{'/'.join(parts)} "
                            f"(allowed: {', '.join(sorted(allowed))})",
                            headers={"Allow": ", ".join(sorted(allowed))})
        return handler


_SPECIAL = frozenset({"_history", "_search", "metadata"})


def path_shape(parts: list[str]) -> str:
    """Classify a path: 'Patient/1/_history/2' -> 'T/I/_history/V'."""
    if not parts:
        return ""
    if len(parts) == 2:  # the commonest request (read, update, delete): short cut
        first, second = parts
        if (first not in _SPECIAL and second not in _SPECIAL
                and not first.startswith("$") and not second.startswith("$")):
            return "T/I"
    out: list[str] = []
    for n, part in enumerate(parts):
        if part.startswith("$"):
            out.append("$")
        elif part in ("_history", "_search", "metadata") or n == 0:
            out.append(part if part in ("_history", "_search", "metadata") else "T")
        elif n == 1:
            out.append("I")
        elif n == 3 and out[2] == "_history":
            out.append("V")
        elif n == 2:
            out.append("C")  # compartment: Patient/1/Observation
        else:
            out.append("?")
    return "/".join(out)


# -- handlers -------------------------------------------------------------------------


async def _metadata(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    if ix.capabilities is None:
        raise FhirError(Category.NOT_SUPPORTED, "No CapabilityStatement is configured")
    return await ix.capabilities(req)


async def _read(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    version = await ix.repo.read(parts[0], parts[1])
    return _not_modified(req, version) or shaped(req, read_response(version))


async def _vread(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    version = await ix.repo.vread(parts[0], parts[1], parts[3])
    return _not_modified(req, version) or shaped(req, read_response(version))


async def _create(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    result = await ix.repo.create(parts[0], req.parsed_body(), uow=req.uow, id=req.assigned_id)
    return write_response(req, result)


async def _update(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    result = await ix.repo.update(parts[0], parts[1], req.parsed_body(),
                                  if_match=req.headers.get("if-match"), uow=req.uow)
    return write_response(req, result)


async def _delete(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    result = await ix.repo.delete(parts[0], parts[1], if_match=req.headers.get("if-match"),
                                  uow=req.uow)
    headers = version_headers(result.version) if result else {}
    if result is None:
        check_type(parts[0])
    return FhirResponse(204, headers=headers, version=result.version if result else None)


async def _history(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    from fhirpm.repository.history import history_bundle

    keep = await access.history_filter(ix, req, parts)
    return await history_bundle(ix.repo, req, parts, ix.default_count, ix.max_count,
                                keep=keep)


async def _operation(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    name = next(p for p in parts if p.startswith("$"))[1:]
    op = ix.operations.get(name)
    if op is None:
        raise FhirError(Category.NOT_SUPPORTED, f"Operation ${name} is not supported")
    type_ = parts[0] if len(parts) > 1 else None
    if type_ is not None:
        check_type(type_)
    id_ = parts[1] if len(parts) > 2 else None
    return await op(ix, req, type_, id_)


async def _search(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    if ix.search_handler is None:
        raise FhirError(Category.NOT_SUPPORTED, "Search is not available")
    return await ix.search_handler(ix, req, parts)


async def _system_post(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    if ix.system_post is None:
        raise FhirError(Category.NOT_SUPPORTED, "Batch and transaction are not available")
    return await ix.system_post(ix, req, parts)


_ROUTES: dict[str, dict[str, Handler]] = {
    "": {"GET": _search, "POST": _system_post},
    "metadata": {"GET": _metadata},
    "_history": {"GET": _history},
    "_search": {"POST": _search},
    "$": {"GET": _operation, "POST": _operation},
    "T": {"GET": _search, "POST": _create},
    "T/_search": {"POST": _search},
    "T/_history": {"GET": _history},
    "T/$": {"GET": _operation, "POST": _operation},
    "T/I": {"GET": _read, "PUT": _update, "DELETE": _delete},
    "T/I/_history": {"GET": _history},
    "T/I/_history/V": {"GET": _vread},
    "T/I/$": {"GET": _operation, "POST": _operation},
    "T/I/C": {"GET": _search},
}


def add_route(shape: str, method: str, handler: Handler) -> None:
    """Let a package (patch, conditional interactions) claim a method on a path shape."""
    _ROUTES.setdefault(shape, {})[method] = handler


def allowed_methods(shape: str) -> frozenset[str]:
    """The methods some handler serves on a path shape (the CapabilityStatement asks)."""
    return frozenset(_ROUTES.get(shape, {}))


# -- responses ------------------------------------------------------------------------


def read_response(version: ResourceVersion) -> FhirResponse:
    return FhirResponse(200, version.body, version_headers(version), version)


def shaped(req: FhirRequest, response: FhirResponse) -> FhirResponse:
    """Apply `_summary` / `_elements` to a read (fhirpm.fhir.shaping owns the rules)."""
    if not req.params:  # nothing asked for: the stored bytes as they are
        return response
    summary, elements = shaping.requested(req.params)
    if (summary is None and elements is None) or response.body is None:
        return response
    kind = response.version.type if response.version else ""
    response.body = shaping.shape(response.body, summary, elements, kind)
    return response


def write_response(req: FhirRequest, result: WriteResult) -> FhirResponse:
    v = result.version
    headers = version_headers(v)
    headers["Location"] = f"{req.base}/{v.type}/{v.id}/_history/{v.version}"
    status = 201 if result.created else 200
    prefer = _prefer_return(req)
    if prefer == "minimal":
        body = None
    elif prefer == "OperationOutcome":
        what = "created" if result.created else ("updated" if result.changed else "unchanged")
        body = jsonio.dumps(information_outcome(
            f"{v.type}/{v.id} {what} (version {v.version})"))
    else:
        body = v.body
    return FhirResponse(status, body, headers, v, result.entries)


def _prefer_return(req: FhirRequest) -> str:
    for part in (req.headers.get("prefer") or "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == "return":
            return value.strip().strip('"')
    return "representation"


def _not_modified(req: FhirRequest, version: ResourceVersion) -> FhirResponse | None:
    """Honour If-None-Match (version) and If-Modified-Since (time) on reads."""
    inm = req.headers.get("if-none-match")
    if inm is not None:
        tags = {parse_etag(t) for t in inm.split(",")}
        if str(version.version) in tags or "*" in tags:
            return FhirResponse(304, None, version_headers(version), version)
        return None
    ims = req.headers.get("if-modified-since")
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return None
        modified = datetime.fromisoformat(version.last_updated).replace(microsecond=0)
        if since.tzinfo is not None and modified <= since:
            return FhirResponse(304, None, version_headers(version), version)
    return None
