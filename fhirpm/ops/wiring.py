"""`install(app, ...)`: the operations layer's parts, built once from settings and wired into
the app: the edge middleware, /healthz, /readyz and /metrics, the store timer, the
lifecycle flag readiness reports, and the bundle handler's batch/transaction label.

`app.state.ops` is the `Ops` object; other parts register into it:
`ops.readiness.add(name, check)` and `ops.metrics.callback(name, help, labels, fn)`.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fhirpm import __version__
from fhirpm.auth.discovery import MOUNT as AUTH_MOUNT  # where the auth server is mounted
from fhirpm.config import Settings
from fhirpm.ops import context
from fhirpm.ops.cors import CorsPolicy, client_origins
from fhirpm.ops.deadline import Deadlines
from fhirpm.ops.forwarded import TrustedProxies
from fhirpm.ops.health import Lifecycle, Readiness
from fhirpm.ops.metrics import CONTENT_TYPE, Registry
from fhirpm.ops.ratelimit import RateLimiter, auth_rules
from fhirpm.ops.store import TimedStore
from fhirpm.storage.port import ResourceStore

log = logging.getLogger("fhirpm.ops")

HEALTH_DOC = ("ops.health", "readiness")  # the document the store check reads


class Ops:
    """The operations layer of one app."""

    def __init__(self, settings: Settings, store: ResourceStore, *, mount: str = "/fhir",
                 auth: bool = True, clock: Any = time.monotonic) -> None:
        conf = settings.ops
        self.settings = conf
        self.mount = mount
        self.auth_mount = AUTH_MOUNT
        self.base_host = urlsplit(settings.fhir_base).netloc.lower()
        self.proxies = TrustedProxies(conf.trusted_proxies)
        self.deadlines = (Deadlines(conf.request_timeout, context._current)
                          if conf.request_timeout else None)
        self.access_log = conf.access_log
        self.hsts = f"max-age={conf.hsts_seconds}".encode() if conf.hsts_seconds else None
        self.cors = self._cors(conf.cors_origins, store, auth)
        self.limiter = self._limiter(settings, clock) if conf.rate_limits and auth else None
        self.readiness = Readiness()
        self.lifecycle = Lifecycle()
        self.metrics = registry = Registry()
        self.requests = registry.requests(
            ("fhirpm_http_requests_total", "HTTP requests by FHIR interaction, resource type "
             "and status"),
            ("fhirpm_http_request_duration_seconds", "HTTP request latency by FHIR "
             "interaction and resource type"), ("interaction", "type"))
        self.in_flight = 0
        registry.callback("fhirpm_http_requests_in_flight", "HTTP requests being served", (),
                          lambda: [((), float(self.in_flight))])
        self.store_latency = registry.histogram(
            "fhirpm_store_operation_duration_seconds", "Store call latency by operation",
            ("operation",))
        self.limited = registry.counter("fhirpm_rate_limited_total",
                                        "Requests refused by a rate limit", ("limit",))
        self.timeouts = registry.counter("fhirpm_request_timeouts_total",
                                         "Requests abandoned at the time limit")
        registry.callback("fhirpm_build_info", "fhirpm version", ("version",),
                          lambda: [((__version__,), 1.0)])
        registry.callback("fhirpm_process_start_time_seconds", "Process start (Unix time)",
                          (), lambda: [((), _STARTED)])
        self.readiness.add("lifecycle", self.lifecycle.check)
        self.readiness.add("store", lambda: _store_check(store))
        self._warned_host = False

    @staticmethod
    def _cors(origins: list[str] | None, store: ResourceStore, auth: bool) -> CorsPolicy:
        if origins is not None or not auth:
            return CorsPolicy(origins if origins is not None else [])
        return CorsPolicy(None, lambda: client_origins(store))

    @staticmethod
    def _limiter(settings: Settings, clock: Any) -> RateLimiter:
        conf = settings.ops
        limits = {"login": conf.login_limit, "login_user": conf.login_user_limit,
                  "token": conf.token_limit, "register": conf.register_limit}
        return RateLimiter(auth_rules(limits, AUTH_MOUNT, clock))

    def believe_forwarded(self, scope: dict[str, Any], peer: str | None,
                          forwarded: dict[bytes, bytes]) -> dict[str, Any]:
        """The scope as the client addressed it, from a trusted proxy's X-Forwarded-*."""
        def text(name: bytes) -> str | None:
            value = forwarded.get(name)
            return value.decode("latin-1") if value is not None else None

        origin = self.proxies.resolve(peer, scope.get("scheme", "http"),
                                      text(b"x-forwarded-for"), text(b"x-forwarded-proto"),
                                      text(b"x-forwarded-host"))
        scope = dict(scope)
        if origin.client:
            scope["client"] = (origin.client, 0)
        scope["scheme"] = origin.scheme
        if origin.host:
            scope["headers"] = [*((k, v) for k, v in scope["headers"] if k != b"host"),
                                (b"host", origin.host.encode("latin-1"))]
            self._check_base(origin.host)
        return scope

    def _check_base(self, host: str) -> None:
        if not self._warned_host and host.lower() != self.base_host:
            self._warned_host = True
            log.warning("requests arrive for host %s but the FHIR base URL names %s: set "
                        "FHIRPM_BASE_URL to the public URL (docs/operations.md)", host,
                        self.base_host)

    def routes(self) -> list[BaseRoute]:
        out: list[BaseRoute] = [Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
                                Route("/readyz", self.readyz, methods=["GET", "HEAD"])]
        if self.settings.metrics:
            out.append(Route("/metrics", self.scrape, methods=["GET"]))
        return out

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "up"}, headers={"Cache-Control": "no-store"})

    async def readyz(self, request: Request) -> Response:
        ready, checks = await self.readiness.run()
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            200 if ready else 503, headers={"Cache-Control": "no-store"})

    async def scrape(self, request: Request) -> Response:
        token = self.settings.metrics_token
        if token is not None:
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"error": "metrics need the configured bearer token"}, 401,
                                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return Response(await self.metrics.render(), media_type=CONTENT_TYPE,
                        headers={"Cache-Control": "no-store"})


_STARTED = time.time()


async def _store_check(store: ResourceStore) -> bool:
    await store.doc_get(*HEALTH_DOC)  # fails until the store is open (and migrated)
    return True


def install(app: Any, settings: Settings, store: ResourceStore, interactions: Any, *,
            auth: bool, mount: str = "/fhir") -> Ops:
    """Wire the operations layer into `app` (see the module docstring); returns it."""
    from fhirpm.ops.middleware import EdgeMiddleware

    ops = Ops(settings, store, mount=mount, auth=auth)
    interactions.repo.store = TimedStore(interactions.repo.store, ops.store_latency)
    if interactions.system_post is not None:
        interactions.system_post = _labelled(interactions.system_post)
    app.router.lifespan_context = _tracked(app.router.lifespan_context, ops)
    app.router.routes.extend(ops.routes())
    app.add_middleware(EdgeMiddleware, ops=ops)
    app.state.ops = ops
    return ops


def _tracked(lifespan: Any, ops: Ops) -> Any:
    """The app's lifespan, telling readiness when startup is done and shutdown begins."""
    lifecycle = ops.lifecycle

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        lifecycle.state = "starting"
        async with lifespan(app) as state:
            lifecycle.state = "running"
            try:
                yield state
            finally:
                lifecycle.state = "stopping"
        lifecycle.state = "stopped"
        if ops.deadlines is not None:
            await ops.deadlines.close()
    return run


def _labelled(handler: Any) -> Any:
    """POST [base]: parse the Bundle once, name the interaction (batch | transaction) for
    metrics, and hand the parsed body on so the bundle handler does not parse it again."""
    async def run(ix: Any, req: Any, parts: list[str]) -> Any:
        body = req.parsed_body()
        if isinstance(body, dict) and body.get("type") in ("batch", "transaction"):
            context.label_interaction(body["type"])
        return await handler(ix, dataclasses.replace(req, resource=body), parts)
    return run
