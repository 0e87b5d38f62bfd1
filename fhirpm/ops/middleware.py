"""The edge: one pure ASGI middleware around the whole app for every operational concern
that touches each request.

In order: believe X-Forwarded-* from trusted proxies; give the request an id (made
current for logs and audit); answer CORS preflights for the FHIR API; refuse over-eager
clients on rate-limited endpoints; run the app under the time limit (which stops counting
once the response has started, so long downloads may stream); add the request id,
security and CORS headers to the response; turn anything that escaped into an
OperationOutcome; record metrics and one access-log line. It is a single layer on purpose:
each layer costs every read a little, and the read path must stay close to the floor.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, Response

from fhirpm.api.routes import FhirEndpoint, error_response
from fhirpm.errors import Category, FhirError, Issue
from fhirpm.logs import AccessLine
from fhirpm.ops import context
from fhirpm.ops.classify import OPS_PATHS, classify
from fhirpm.ops.ratelimit import Rule

if TYPE_CHECKING:
    from fhirpm.ops.wiring import Ops

log = logging.getLogger("fhirpm.ops")
access = logging.getLogger("fhirpm.access")

Scope = dict[str, Any]
Message = dict[str, Any]
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
_MAX_LOGIN_FORM = 64 * 1024


class EdgeMiddleware:
    def __init__(self, app: Any, ops: Ops) -> None:
        self.app = app
        self.ops = ops
        self.mount = ops.mount
        self.fhir_prefix = ops.mount + "/"
        self.auth_prefix = ops.auth_mount + "/"
        self.access_line = AccessLine(access, annotators=(context.RequestIdFilter,))
        # what every request consults, looked up once (the objects themselves may change)
        self.proxies = ops.proxies if ops.proxies else None
        self.deadlines = ops.deadlines
        self.requests = ops.requests
        self.hsts = ops.hsts
        # The FHIR endpoint adds the edge's response headers itself (`respond`), so it is
        # called without a wrapped `send`: one layer fewer on every read.
        self.direct = app.respond if isinstance(app, FhirEndpoint) else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        headers = dict(scope["headers"])  # one C-level pass; names are lower-case
        connection = scope.get("client")
        client = connection[0] if connection else None
        if self.proxies is not None and _FORWARDED & headers.keys() and (
                self.proxies.trusts(client)):
            scope = self.ops.believe_forwarded(scope, client, headers)
            client = scope["client"][0] if scope.get("client") else None
        exchange = context.Exchange(context.request_id(headers.get(b"x-request-id")),
                                    scope["method"], scope["path"], client,
                                    scope.get("scheme", "http"), start)
        token = context._current.set(exchange)
        ops = self.ops
        ops.in_flight += 1
        try:  # in this frame rather than a helper coroutine: one frame fewer per read
            cors: list[tuple[bytes, bytes]] | None = None
            origin = headers.get(b"origin")
            if origin is not None or (exchange.method == "POST" and ops.limiter is not None):
                cors, receive, answered = await self._admit(scope, receive, send, exchange,
                                                            origin)
                if answered:
                    return
            if self.deadlines is not None:
                self.deadlines.start(exchange)
            try:
                if self.direct is not None:
                    await self.direct(scope, receive, send, self._tail(exchange, cors),
                                      exchange)
                else:
                    await self.app(scope, receive, self._wrap(send, exchange, cors))
            except asyncio.CancelledError:
                if not exchange.timed_out or exchange.status:
                    raise
            except Exception:
                log.exception("unhandled error on %s %s", exchange.method, exchange.path)
                if exchange.status:
                    raise
                err = FhirError(Category.INTERNAL, "Internal server error; see the server "
                                f"log (request {exchange.request_id})")
                await error_response(err)(scope, receive, self._wrap(send, exchange, cors))
            if exchange.timed_out and not exchange.status:
                await self._timed_out(scope, receive, self._wrap(send, exchange, cors),
                                      exchange)
        finally:
            context._current.reset(token)
            ops.in_flight -= 1
            self._record(exchange, perf_counter() - start)

    async def _admit(self, scope: Scope, receive: Any, send: Any,
                     exchange: context.Exchange, origin: bytes | None
                     ) -> tuple[list[tuple[bytes, bytes]] | None, Any, bool]:
        """CORS and rate limits: (the CORS response headers, the receive to use from now
        on, whether the request has been answered here: a preflight, a refusal)."""
        ops = self.ops
        cors: list[tuple[bytes, bytes]] | None = None
        if origin is not None and ops.cors is not None and self._is_fhir(exchange.path):
            allowed = await ops.cors.allows(origin.decode("latin-1"))
            if _is_preflight(scope) and "/.well-known/" not in exchange.path:
                await self._preflight(scope, receive, self._wrap(send, exchange, None),
                                      origin, allowed)
                return None, receive, True
            if allowed:
                cors = ops.cors.response_headers(origin)
        if exchange.method == "POST" and ops.limiter is not None:
            rule = ops.limiter.rule_for("POST", exchange.path)
            if rule is not None:
                receive, refused = await self._limit(rule, scope, receive, exchange)
                if refused is not None:
                    await refused(scope, receive, self._wrap(send, exchange, cors))
                    return cors, receive, True
        return cors, receive, False

    def _wrap(self, send: Any, exchange: context.Exchange,
              cors: list[tuple[bytes, bytes]] | None) -> Any:
        """`send` adding the edge's response headers and noting the status."""
        edge_headers = self._headers

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]  # the time limit ends here too
                # in place, as Starlette's own middleware does: the dict is the app's
                # message, made for this call
                message["headers"] = edge_headers(message.get("headers") or [], exchange, cors)
            await send(message)
        return send_wrapper

    async def _timed_out(self, scope: Scope, receive: Any, send: Any,
                         exchange: context.Exchange) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the cancellation was ours, and it has been handled
        self.ops.timeouts.inc()
        limit = self.ops.settings.request_timeout
        log.warning("request timed out after %g s: %s %s", limit, exchange.method,
                    exchange.path)
        await error_response(_timed_out(limit))(scope, receive, send)

    def _is_fhir(self, path: str) -> bool:
        return path == self.mount or path.startswith(self.fhir_prefix)

    async def _preflight(self, scope: Scope, receive: Any, send: Any, origin: bytes,
                         allowed: bool) -> None:
        if not allowed:
            err = FhirError(Category.FORBIDDEN, f"Origin {origin.decode('latin-1')!r} may "
                            "not call this FHIR API (CORS); see FHIRPM_OPS__CORS_ORIGINS")
            await error_response(err)(scope, receive, send)
            return
        assert self.ops.cors is not None
        response = Response(status_code=204)
        response.raw_headers.extend(self.ops.cors.preflight_headers(origin))
        await response(scope, receive, send)

    async def _limit(self, rule: Rule, scope: Scope, receive: Any,
                     exchange: context.Exchange) -> tuple[Any, Response | None]:
        """(receive to use from now on, the 429 to send or None)."""
        username = None
        if rule.per_user is not None:
            receive, username = await _peek_username(receive)
        assert self.ops.limiter is not None
        wait = self.ops.limiter.check(rule, exchange.client, username)
        if not wait:
            return receive, None
        self.ops.limited.inc((rule.name,))
        log.warning("rate limit %s exceeded by %s", rule.name, exchange.client,
                    extra={"limit": rule.name, "client": exchange.client})
        return receive, _too_many(rule, wait)

    def _tail(self, exchange: context.Exchange,
              cors: list[tuple[bytes, bytes]] | None) -> list[tuple[bytes, bytes]]:
        """The edge's headers for an app known to set none of them (`direct`)."""
        out = [(b"x-request-id", exchange.request_id.encode()), _NOSNIFF]
        if self.hsts and exchange.scheme == "https":
            out.append((b"strict-transport-security", self.hsts))
        if cors is not None:
            out.extend(cors)
        return out

    def _headers(self, headers: list[tuple[bytes, bytes]], exchange: context.Exchange,
                 cors: list[tuple[bytes, bytes]] | None) -> list[tuple[bytes, bytes]]:
        present = dict(headers)  # ASGI header names are lower-case
        out = [*headers, (b"x-request-id", exchange.request_id.encode())]
        if b"x-content-type-options" not in present:
            out.append(_NOSNIFF)
        if self.hsts and exchange.scheme == "https" and (
                b"strict-transport-security" not in present):
            out.append((b"strict-transport-security", self.hsts))
        if cors is not None and b"access-control-allow-origin" not in present:
            out.extend(cors)
        if exchange.path.startswith(self.auth_prefix):
            out.extend(_auth_headers(present))
        return out

    def _record(self, exchange: context.Exchange, seconds: float) -> None:
        interaction, type_ = classify(exchange.method, exchange.path, self.mount,
                                      exchange.label)
        status = exchange.status or 499  # no response started: the client went away
        self.requests.record(interaction, type_, status, seconds)
        if not self.ops.access_log:
            return
        if status < 400 and exchange.path in OPS_PATHS:
            return  # probes and scrapes every few seconds would drown the log
        # the path only: query strings carry search terms, which may be patient data
        # milliseconds to the microsecond (round(x, 3) on a float costs ~0.7 us: it goes
        # through a decimal conversion)
        self.access_line.request(exchange.request_id, exchange.method, exchange.path, status,
                                 int(seconds * 1e6 + 0.5) / 1000, exchange.client,
                                 interaction)


def _is_preflight(scope: Scope) -> bool:
    return scope["method"] == "OPTIONS" and any(
        name == b"access-control-request-method" for name, _ in scope["headers"])


def _auth_headers(present: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """Authorization server responses carry codes, tokens and login forms: never cached,
    never framed, never leaking their URL in a Referer."""
    out = []
    if b"cache-control" not in present:
        out += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
    if present.get(b"content-type", b"").startswith(b"text/html"):
        if b"x-frame-options" not in present:
            out.append((b"x-frame-options", b"DENY"))
        if b"content-security-policy" not in present:
            out.append((b"content-security-policy", b"frame-ancestors 'none'"))
        if b"referrer-policy" not in present:
            out.append((b"referrer-policy", b"no-referrer"))
    return out


async def _peek_username(receive: Any) -> tuple[Any, str | None]:
    """Read a (small) login form to learn the username; hand back a receive that replays
    what was read, so the endpoint still sees the whole body."""
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False) or len(body) > _MAX_LOGIN_FORM:
            break
    username = None
    if len(body) <= _MAX_LOGIN_FORM:
        try:
            pairs = parse_qsl(body.decode("utf-8"), max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            pairs = []
        username = next((v.strip() for k, v in pairs if k == "username"), None)

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay, username or None


def _too_many(rule: Rule, wait: int) -> Response:
    headers = {"Retry-After": str(wait)}
    message = f"Too many requests; try again in {wait} s"
    if rule.style == "oauth":
        from fhirpm.auth.errors import OAuthError

        err = OAuthError("temporarily_unavailable", message, Category.THROTTLED)
        return JSONResponse(err.body(), err.status, headers={
            **headers, "Cache-Control": "no-store", "Pragma": "no-cache"})
    if rule.style == "page":
        from fhirpm.auth.pages import error_page

        page = error_page(f"Too many sign-in attempts. Please wait {wait} seconds and try "
                          "again.", Category.THROTTLED.status)
        page.headers.update(headers)
        return page
    return error_response(FhirError(Category.THROTTLED, message, headers=headers))


def _timed_out(limit: float) -> FhirError:
    text = (f"The request took longer than {limit:g} s and was abandoned; a write may or "
            "may not have been applied, so read before retrying one")
    return FhirError(Category.UNAVAILABLE, text, issues=[Issue("timeout", text)])
