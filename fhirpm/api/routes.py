"""The FHIR endpoint: every path under the base goes through one Starlette endpoint into
`Interactions.dispatch`. Errors become OperationOutcomes here and nowhere else.

Each request carries its caller (`FhirRequest.principal`, from the Authorization header
through `bearer.Callers`); what the caller may do is decided below, in
`fhirpm.repository.access`. `callers=None` means authorization is off (development only):
every request is then trusted."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
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

_FORWARDED_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-none-exist",
                      "prefer", "accept", "content-type")
_BODY_METHODS = ("POST", "PUT", "PATCH")


class FhirEndpoint:
    def __init__(self, interactions: Interactions, base_url: str, max_body_bytes: int,
                 mount: str, *, callers: Callers | None) -> None:
        self.interactions = interactions
        self.callers = callers
        self.base_url = base_url
        self.max_body_bytes = max_body_bytes
        self.mount = mount

    async def handle(self, request: Request) -> Response:
        params = request.query_params
        media = "application/fhir+json"
        pretty = wants_pretty(params.get("_pretty"))
        try:
            media = response_media_type(params.get("_format"), request.headers.get("accept"))
            fhir_request = await self._fhir_request(request)
            answer = await self.interactions.dispatch(fhir_request)
            return _render(answer, media, pretty)
        except FhirError as err:
            return error_response(err, media, pretty)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            err = FhirError(Category.INTERNAL, "Internal server error; see the server log")
            return error_response(err, media, pretty)

    async def _fhir_request(self, request: Request) -> FhirRequest:
        method = request.method
        body = None
        scope = request.scope
        # the scope's own path and raw header list: building request.url (urlsplit) and a
        # Headers lookup per name cost more than the store read of a GET by id
        path = scope["path"][len(self.mount):].strip("/")
        if method in _BODY_METHODS:
            if not path.endswith("_search"):  # search checks its form body itself
                check_request_media_type(request.headers.get("content-type"), method)
            body = await self._read_body(request)
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:  # ASGI: names are lower-case bytes
            name = raw_name.decode("latin-1")
            if name in _FORWARDED_HEADERS and name not in headers:
                headers[name] = raw_value.decode("latin-1")
        params = tuple(request.query_params.multi_items()) if scope["query_string"] else ()
        principal = None
        if self.callers is not None:
            principal = await self.callers.caller(request.headers.get("authorization"))
        return FhirRequest(method=method, path=path, base=self.base_url, params=params,
                           headers=headers, body=body, principal=principal)

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
        return b"".join(chunks)


def _too_large(limit: int) -> FhirError:
    return FhirError(Category.TOO_LARGE, f"Request body is larger than {limit} bytes")


def _render(answer: FhirResponse, media: str, pretty: bool) -> Response:
    body = answer.body
    if body is not None and pretty:
        body = jsonio.dumps(jsonio.loads(body), pretty=True)
    headers = dict(answer.headers)
    if answer.status == 304:
        return Response(status_code=304, headers=headers)
    return Response(content=body, status_code=answer.status, headers=headers,
                    media_type=f"{media}; charset=utf-8" if body is not None else None)


def error_response(err: FhirError, media: str = "application/fhir+json",
                   pretty: bool = False) -> Response:
    return Response(content=jsonio.dumps(err.outcome(), pretty=pretty),
                    status_code=err.status, headers=err.headers,
                    media_type=f"{media}; charset=utf-8")

