"""The composition root: `create_app(settings, store)` wires every part, and nothing else
constructs them. Config reaches each part as an argument."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fhirpm import __version__, runtime
from fhirpm.api.bearer import Callers
from fhirpm.api.routes import FhirEndpoint
from fhirpm.changes import ChangeFeed
from fhirpm.config import Settings
from fhirpm.fhir.validation import FhirkitValidator
from fhirpm.jobs import Jobs
from fhirpm.repository import Repository
from fhirpm.repository.interactions import Interactions
from fhirpm.search.extract import RegistryIndexer
from fhirpm.search.registry import Registry
from fhirpm.storage.factory import store_from_settings
from fhirpm.storage.port import ResourceStore

log = logging.getLogger("fhirpm")

FHIR_MOUNT = "/fhir"


def build_interactions(settings: Settings, store: ResourceStore) -> Interactions:
    """Everything below HTTP: repository, interactions and the packages that extend them."""
    from fhirpm.api import capability
    from fhirpm.operations import install as install_operations
    from fhirpm.repository import bundle

    registry = Registry.load_default()
    indexer = RegistryIndexer(registry, local_base=settings.fhir_base)
    repo = Repository(store, FhirkitValidator(), indexer, registry)
    interactions = Interactions(repo, default_count=settings.default_count,
                                max_count=settings.max_count)
    bundle.install(interactions, max_entries=settings.bundle_max_entries)
    from fhirpm.repository import prepare

    prepare.configure(settings.transaction_workers)
    capability.install(interactions)
    install_operations(interactions)
    _install_search(interactions)
    from fhirpm.audit import wiring as audit  # every request recorded (fhirpm.audit)

    audit.install(interactions, settings)
    return interactions


def _install_search(interactions: Interactions) -> None:
    """Search, conditional interactions and $reindex (fhirpm.repository.search)."""
    from fhirpm.operations import reindex
    from fhirpm.repository import conditional, search

    search.install(interactions)
    conditional.install(interactions)
    reindex.install(interactions)


def create_app(settings: Settings | None = None, store: ResourceStore | None = None) -> FastAPI:
    settings = settings or Settings()
    store = store or store_from_settings(settings)
    interactions = build_interactions(settings, store)
    changes = ChangeFeed(store)  # consumers subscribe before startup; see fhirpm.changes
    jobs = Jobs(store)  # periodic jobs shared by every process; register before startup
    from fhirpm import scheduling

    scheduling.install(interactions, jobs, settings)  # $find/$hold/$book, slots, visits
    from fhirpm.audit import wiring as audit_wiring

    hl7 = None
    if settings.hl7.enabled:  # the MLLP listener and the v2 outbox (fhirpm.hl7v2)
        from fhirpm.hl7v2.bridge import Bridge

        hl7 = Bridge(interactions, settings.hl7, settings.fhir_base, feed=changes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        await audit_wiring.start(interactions)  # the audit journal (fhirpm.audit.journal)
        log.info("fhirpm ready", extra={"base_url": settings.fhir_base,
                                         "store": settings.store_url})
        if hl7 is not None:
            await hl7.start()
        await changes.start()
        await jobs.start()
        runtime.tune_gc()  # fhirpm.runtime: the collector cost ~10% of ingest
        try:
            yield
        finally:
            await jobs.stop()
            await changes.stop()
            if hl7 is not None:
                await hl7.stop()
            await audit_wiring.stop(interactions)
            await store.close()
            from fhirpm.repository import prepare  # large transactions' worker processes

            prepare.shutdown()

    app = FhirApp(title="fhirpm", version=__version__, lifespan=lifespan,
                  docs_url="/docs", openapi_url="/openapi.json", **_NO_OTEL)
    app.state.auth = None
    callers = None  # who calls the FHIR API (fhirpm.api.bearer); None: authorization off
    if settings.auth.enabled:  # SMART authorization server; before the FHIR catch-all
        from fhirpm.auth import routes as auth_routes
        from fhirpm.auth.server import AuthServer

        app.state.auth = AuthServer(settings, store)
        app.router.routes.extend(auth_routes.build(app.state.auth, FHIR_MOUNT))
        # CapabilityStatement.rest.security (oauth-uris), for the statement to publish
        interactions.features["security"] = app.state.auth.security()
        callers = Callers(app.state.auth.verifier, recheck=settings.auth.token_recheck_seconds)
    else:
        log.warning("AUTHORIZATION IS DISABLED (FHIRPM_AUTH__ENABLED=false): anyone who can "
                    "reach this server can read and change every record. Development only.")
    endpoint = FhirEndpoint(interactions, settings.fhir_base, settings.max_body_bytes,
                            FHIR_MOUNT, callers=callers)
    # a plain ASGI app, so Starlette routes every method to it and an unknown one gets the
    # FHIR router's 405 OperationOutcome, not the framework's own
    fhir = endpoint
    app.router.routes.append(Route(FHIR_MOUNT, fhir))
    app.router.routes.append(Route(FHIR_MOUNT + "/{path:anything}", fhir))
    from fhirpm import ops  # request ids, access log, limits, CORS, health, metrics

    ops_layer = ops.install(app, settings, store, interactions, auth=settings.auth.enabled,
                            mount=FHIR_MOUNT)  # app.state.ops: checks and metrics register here
    if hl7 is not None:
        hl7.register(ops_layer)  # readiness `mllp`, HL7 v2 message metrics
    from fhirpm.ops.middleware import EdgeMiddleware

    app.fhir_fast_path = EdgeMiddleware(fhir, ops=ops_layer)
    from fhirpm.audit import wiring as audit  # request ids, retention job, auth hooks
    from fhirpm.ops import context

    audit.connect(interactions, settings, jobs=jobs, exchange=context.current,
                  auth=app.state.auth, metrics=ops_layer.metrics)
    _fhir_routes_first(app)
    app.state.interactions = interactions
    app.state.store = store
    app.state.changes = changes
    app.state.jobs = jobs
    app.state.hl7 = hl7
    app.state.settings = settings
    return app


# fhirpm exports its own Prometheus metrics (fhirpm.ops); FastAPI's OpenTelemetry hooks
# would cost every request a provider check for nothing. Older FastAPIs have no such hooks.
_NO_OTEL = ({"telemetry": {"tracing": False, "metrics": False, "logs": False}}
            if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


class FhirApp(FastAPI):
    """FastAPI with a fast path for the hot path: a FHIR request (any path under the base
    but `.well-known/`) goes through the edge middleware (request ids, logs, CORS, limits,
    metrics) straight to the FHIR endpoint. FastAPI's own layers (error pages, exception
    handlers, exit stacks, route scan) do nothing for it, since the endpoint answers every
    error itself as an OperationOutcome, and they cost about a third of a read."""

    fhir_fast_path: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fhir_fast_path
        if fast is not None and scope["type"] == "http" and _is_fhir_path(scope["path"]):
            scope["app"] = self
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _is_fhir_path(path: str) -> bool:
    if path == FHIR_MOUNT:
        return True
    return path.startswith(_FHIR_PREFIX) and not path.startswith(_WELL_KNOWN)


_FHIR_PREFIX = FHIR_MOUNT + "/"
_WELL_KNOWN = FHIR_MOUNT + "/.well-known/"


def _fhir_routes_first(app: FastAPI) -> None:
    """Routes under the FHIR base go first, in their own order (exact ones such as
    `.well-known/smart-configuration` were added before the catch-all): a FHIR request is
    the hot path and should not be matched against every auth, docs and ops route first."""
    routes = app.router.routes
    fhir = [r for r in routes if getattr(r, "path", "").startswith(FHIR_MOUNT)]
    rest = [r for r in routes if not getattr(r, "path", "").startswith(FHIR_MOUNT)]
    routes[:] = fhir + rest


class _Anything(Convertor[str]):
    """Like Starlette's `path` convertor but also across newlines (`%0A` in an id): the FHIR
    router, not a framework 404, must answer every path under the base."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _Anything())
