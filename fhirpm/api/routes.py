"""The FHIR endpoint: every path under the base goes through one ASGI app into
`Interactions.dispatch`. Errors become OperationOutcomes here and nowhere else.

Each request carries its caller (`FhirRequest.principal`, from the Authorization header
through `bearer.Callers`); what the caller may do is decided below, in
`fhirpm.repository.access`. `callers=None` means authorization is off (development only):
every request is then trusted.

The endpoint speaks ASGI itself rather than through Starlette's Request and Response: a
read by id serves stored bytes, and building the framework's request, query and header
objects, its exception wrapper and its response cost more than the store read
(docs/performance.md). What it sends is what `starlette.responses.Response` would send:
the handler's headers (names lower-cased), then `content-length` and `content-type`.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import Response

from fhirpm.api.bearer import Callers
from fhirpm.api.negotiation import (
    check_request_media_type,
    response_media_type,
    wants_pretty,
)
from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions

log = logging.getLogger("fhirpm.api")

Scope = dict[str, Any]
RawHeaders = list[tuple[bytes, bytes]]

# request headers the interactions read (FhirRequest.headers), and the edge's own
_FORWARDED_HEADERS = frozenset({"if-match", "if-none-match", "if-modified-since",
                                "if-none-exist", "prefer", "accept", "content-type"})
_EDGE_HEADERS = frozenset({b"authorization", b"content-length"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NO_LENGTH = frozenset({204, 304})  # statuses Starlette sends without content-length


class _Disconnected(Exception):
    """The client went away while we read its body."""


class FhirEndpoint:
    """The ASGI app behind every path under the FHIR base (all methods)."""

    def __init__(self, interactions: Interactions, base_url: str, max_body_bytes: int,
                 mount: str, *, callers: Callers | None) -> None:
        self.interactions = interactions
        self.callers = callers
        self.base_url = base_url
        self.max_body_bytes = max_body_bytes
        self.mount = mount

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self.respond(scope, receive, send, (), None)

    async def respond(self, scope: Scope, receive: Any, send: Any, tail: Any,
                      exchange: Any) -> None:
        """Serve one request, adding `tail` (header byte pairs) to the response's headers
        and setting `exchange.status` (when given) just before the response starts: what
        the edge middleware would do through a wrapped `send`, without one
        (fhirpm.ops.middleware). The endpoint itself never sets a header in `tail`."""
        media = "application/fhir+json"
        pretty = False
        try:
            params = _query(scope["query_string"])
            if params:  # a read by id usually has none
                pretty = wants_pretty(_last(params, "_pretty"))
            headers, edge = _headers(scope["headers"])
            media = response_media_type(_last(params, "_format") if params else None,
                                        headers.get("accept"))
            fhir_request = await self._fhir_request(scope, receive, params, headers, edge)
            answer = await self.interactions.dispatch(fhir_request)
            status, raw, body = _render(answer, media, pretty)
        except FhirError as err:
            status, raw, body = _error(err, media, pretty)
        except _Disconnected:
            status, raw, body = 499, [(b"content-length", b"0")], b""
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            err = FhirError(Category.INTERNAL, "Internal server error; see the server log")
            status, raw, body = _error(err, media, pretty)
        if tail:
            raw.extend(tail)
        if exchange is not None:
            exchange.status = status
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _fhir_request(self, scope: Scope, receive: Any,
                            params: tuple[tuple[str, str], ...], headers: dict[str, str],
                            edge: dict[bytes, bytes]) -> FhirRequest:
        method = scope["method"]
        body = None
        path = scope["path"][len(self.mount):].strip("/")
        if method in _BODY_METHODS:
            if not path.endswith("_search"):  # search checks its form body itself
                check_request_media_type(headers.get("content-type"), method)
            body = await self._read_body(receive, edge.get(b"content-length"))
        principal = None
        if self.callers is not None:
            authorization = edge.get(b"authorization")
            principal = await self.callers.caller(
                authorization.decode("latin-1") if authorization is not None else None)
        return _new_request(method, path, self.base_url, params, headers, body, principal)

    async def _read_body(self, receive: Any, declared: bytes | None) -> bytes:
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


# The edge's requests are built without the frozen dataclass's `__init__`, which sets
# each of its ten fields through `object.__setattr__` and cost ~5 us of a read here
# (docs/performance.md): the same slots are filled through their descriptors. The request
# is as immutable as ever; only its construction is cheaper. The short cut knows
# FhirRequest's fields: should they change, requests are built the ordinary way.
_KNOWN_FIELDS = ("method", "path", "base", "params", "headers", "body", "resource", "uow",
                 "assigned_id", "principal")
Params = tuple[tuple[str, str], ...]


def _plain_request(method: str, path: str, base: str, params: Params,
                   headers: dict[str, str], body: bytes | None, principal: Any) -> FhirRequest:
    return FhirRequest(method=method, path=path, base=base, params=params, headers=headers,
                       body=body, principal=principal)


def _request_builder() -> Any:
    if (tuple(f.name for f in fields(FhirRequest)) != _KNOWN_FIELDS
            or not hasattr(FhirRequest, "__slots__")):
        return _plain_request
    slot = FhirRequest.__dict__
    new = object.__new__
    set_method, set_path, set_base, set_params, set_headers, set_body, set_resource, \
        set_uow, set_assigned, set_principal = (slot[name].__set__ for name in _KNOWN_FIELDS)

    def build(method: str, path: str, base: str, params: Params, headers: dict[str, str],
              body: bytes | None, principal: Any) -> FhirRequest:
        req = new(FhirRequest)
        set_method(req, method)
        set_path(req, path)
        set_base(req, base)
        set_params(req, params)
        set_headers(req, headers)
        set_body(req, body)
        set_resource(req, None)
        set_uow(req, None)
        set_assigned(req, None)
        set_principal(req, principal)
        return req
    return build


_new_request = _request_builder()


def _query(raw: bytes) -> tuple[tuple[str, str], ...]:
    """The query string's pairs in order, decoded as Starlette's QueryParams does."""
    if not raw:
        return ()
    return tuple(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


def _last(params: tuple[tuple[str, str], ...], name: str) -> str | None:
    """A parameter's last value (what a query-params mapping's `get` answers)."""
    found = None
    for key, value in params:
        if key == name:
            found = value
    return found


def _headers(raw: RawHeaders) -> tuple[dict[str, str], dict[bytes, bytes]]:
    """(the headers interactions read, the edge's own), first occurrence of each; ASGI
    names are lower-case bytes, and only the names we read are decoded."""
    headers: dict[str, str] = {}
    edge: dict[bytes, bytes] = {}
    for raw_name, raw_value in raw:
        name = _FORWARDED_NAMES.get(raw_name)
        if name is not None:
            if name not in headers:
                headers[name] = raw_value.decode("latin-1")
        elif raw_name in _EDGE_HEADERS:
            edge.setdefault(raw_name, raw_value)
    return headers, edge


_FORWARDED_NAMES = {name.encode("latin-1"): name for name in _FORWARDED_HEADERS}


def _too_large(limit: int) -> FhirError:
    return FhirError(Category.TOO_LARGE, f"Request body is larger than {limit} bytes")


def _render(answer: FhirResponse, media: str, pretty: bool) -> tuple[int, RawHeaders, bytes]:
    body = answer.body
    if body is not None and pretty:
        body = jsonio.dumps(jsonio.loads(body), pretty=True)
    if answer.status == 304:
        return 304, _raw(answer.headers), b""
    return _message(answer.status, answer.headers, body, media)


def _error(err: FhirError, media: str, pretty: bool) -> tuple[int, RawHeaders, bytes]:
    return _message(err.status, err.headers, jsonio.dumps(err.outcome(), pretty=pretty), media)


def _message(status: int, headers: dict[str, str] | None, body: bytes | None,
             media: str) -> tuple[int, RawHeaders, bytes]:
    if not headers:
        return status, _head(status, (), body, media), body or b""
    # The same head is sent again and again (every read of a version: its ETag,
    # Last-Modified and length), so it is built once per distinct head: ~4 -> ~1 us.
    key = (status, tuple(headers.items()), -1 if body is None else len(body), media)
    head = _HEADS.get(key)
    if head is None:
        head = tuple(_head(status, key[1], body, media))
        if len(_HEADS) >= _HEADS_LIMIT:
            _HEADS.clear()
        _HEADS[key] = head
    return status, list(head), body or b""


def _head(status: int, items: Any, body: bytes | None, media: str) -> RawHeaders:
    """The raw header pairs: the handler's (names lower-cased), then what Starlette's
    Response adds unless the handler set it: content-length and content-type."""
    raw = [(_name(k), v.encode("latin-1")) for k, v in items]
    names = {name for name, _ in raw}
    if status >= 200 and status not in _NO_LENGTH and b"content-length" not in names:
        raw.append((b"content-length", b"%d" % len(body or b"")))
    if body is not None and b"content-type" not in names:
        raw.append((b"content-type", _content_type(media)))
    return raw


def _raw(headers: dict[str, str] | None) -> RawHeaders:
    if not headers:
        return []
    return [(_name(k), v.encode("latin-1")) for k, v in headers.items()]


# Heads by (status, handler headers, body length, media type); cleared when full.
_HEADS: dict[tuple[Any, ...], tuple[tuple[bytes, bytes], ...]] = {}
_HEADS_LIMIT = 4096


_NAMES: dict[str, bytes] = {}
_CONTENT_TYPES: dict[str, bytes] = {}


def _name(header: str) -> bytes:
    found = _NAMES.get(header)
    if found is None:
        found = header.lower().encode("latin-1")
        if len(_NAMES) < 256:  # handler header names are a small fixed set
            _NAMES[header] = found
    return found


def _content_type(media: str) -> bytes:
    found = _CONTENT_TYPES.get(media)
    if found is None:
        found = _CONTENT_TYPES[media] = f"{media}; charset=utf-8".encode("latin-1")
    return found


def error_response(err: FhirError, media: str = "application/fhir+json",
                   pretty: bool = False) -> Response:
    """An OperationOutcome as a Starlette response (for the edge middleware's own errors)."""
    return Response(content=jsonio.dumps(err.outcome(), pretty=pretty),
                    status_code=err.status, headers=err.headers,
                    media_type=f"{media}; charset=utf-8")
