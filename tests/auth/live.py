"""The authorization server on a real loopback socket (uvicorn in a thread), for clients
that need real HTTP: the python fhirclient (requests) and a browser."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from fhirpm.auth import routes
from fhirpm.auth.server import AuthServer
from fhirpm.config import AuthSettings, Settings
from fhirpm.storage.sqlite import SqliteResourceStore
from tests.auth.conftest import FAST


def listening_socket() -> socket.socket:
    """Bound and listening before any server thread starts: connections queue, no race."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def metadata_route(server: AuthServer) -> Route:
    """A minimal CapabilityStatement carrying the server's security block (oauth-uris)."""
    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({
            "resourceType": "CapabilityStatement", "status": "active", "date": "2025-01-01",
            "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
            "rest": [{"mode": "server", "security": server.security()}]})
    return Route("/fhir/metadata", metadata)


@contextmanager
def serve_app(app: Any, sock: socket.socket) -> Iterator[None]:
    uv = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                       lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def live_auth(tmp_path: Path, setup: Callable[[AuthServer], Awaitable[Any]],
              **auth: Any) -> Iterator[tuple[Settings, Any]]:
    """Run `setup` (register clients, users, records), then serve; yields (settings, what
    setup returned)."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'live.db'}",
                        base_url=f"http://127.0.0.1:{port}/fhir", log_json=False,
                        auth=AuthSettings(**{**FAST, **auth}))
    # its own thread: the caller's thread may be running a loop (sync playwright does)
    with ThreadPoolExecutor(1) as pool:
        prepared = pool.submit(asyncio.run, _prepare(settings, setup)).result()
    store = SqliteResourceStore.from_url(settings.store_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    server = AuthServer(settings, store)
    extra: list[BaseRoute] = [metadata_route(server)]
    app = Starlette(routes=[*routes.build(server, "/fhir"), *extra], lifespan=lifespan)
    with serve_app(app, sock):
        yield settings, prepared


async def _prepare(settings: Settings, setup: Callable[[AuthServer], Awaitable[Any]]) -> Any:
    store = SqliteResourceStore.from_url(settings.store_url)
    await store.open()
    try:
        return await setup(AuthServer(settings, store))
    finally:
        await store.close()
