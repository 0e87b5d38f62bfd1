"""The application alone: CPU per request of an ASGI app called in-process, no server.

Splits a read's cost into the app's share and the HTTP server's (uvicorn's parsing and
socket writes are the same for fhirpm and its floor): the same GET, sent straight to the
ASGI callable in a loop, timed with the process's CPU clock (all threads) and taken as the
best of a few rounds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def call(app: Asgi, method: str, path: str, body: bytes = b"",
               headers: list[tuple[bytes, bytes]] | None = None) -> list[dict[str, Any]]:
    """One request through `app` (with `headers` besides the usual ones); returns the ASGI
    messages it sent."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "state": {},
             "headers": [(b"host", b"127.0.0.1"), (b"accept", b"application/fhir+json"),
                         (b"content-type", b"application/fhir+json"), *(headers or [])],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # never: the client does not disconnect
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def cpu_per_request(app: Asgi, paths: list[str], *, requests: int = 3000,
                          rounds: int = 4,
                          headers: list[tuple[bytes, bytes]] | None = None) -> float:
    """Best-of-`rounds` CPU seconds per GET of `paths` (cycled) through `app`. Each round
    yields to the event loop between requests, as a server would, so work a request leaves
    for the loop (a log flush, a batched audit commit) is counted."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for n in range(requests):
            await call(app, "GET", paths[n % len(paths)], headers=headers)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # let background work of this round finish inside it
        best = min(best, (time.process_time() - started) / requests)
    return best
