"""CORS for the FHIR API: which browser origins may call it, and the headers that say so.

Browser SMART apps call the FHIR API from their own origin with a bearer token (no
cookies, so never `Allow-Credentials`). The allowed origins are configured
(`FHIRPM_OPS__CORS_ORIGINS`, `["*"]` for any), or by default the origins of the registered
clients' redirect URIs: an app that can receive a code may also call the API. The clients
live in the store (fhirpm.auth.clients); their origins are cached for `ttl` seconds and
re-read lazily, and only when a request carries an Origin header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

log = logging.getLogger("fhirpm.ops.cors")

_DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOW_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = (b"Authorization, Content-Type, Accept, If-Match, If-None-Match, "
                 b"If-None-Exist, If-Modified-Since, Prefer, X-Request-ID")
EXPOSE_HEADERS = (b"Location, Content-Location, ETag, Last-Modified, WWW-Authenticate, "
                  b"X-Request-ID")
MAX_AGE = b"600"

OriginSource = Callable[[], Awaitable[Iterable[str]]]


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL or Origin header value, normalised; None if not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}:{port}"
    return f"{parts.scheme}://{host}"


async def client_origins(store: object) -> set[str]:
    """The origins of every enabled client's redirect URIs (a disabled client is unknown
    to every flow, so its origins are not allowed either)."""
    from fhirpm.auth.clients import client_from_record
    from fhirpm.auth.records import CLIENTS, AuthDocs

    records = await AuthDocs(store).list(CLIENTS, limit=100_000)  # type: ignore[arg-type]
    found: set[str] = set()
    for record in records:
        try:
            client = client_from_record(record.body)
        except (KeyError, TypeError):
            continue
        if client.disabled:
            continue
        uris = client.redirect_uris
        found.update(o for o in map(origin_of, uris) if o)
    return found


class CorsPolicy:
    def __init__(self, configured: list[str] | None, source: OriginSource | None = None, *,
                 ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.any = configured is not None and "*" in configured
        self.fixed = None if configured is None else {
            o for o in map(origin_of, configured) if o}
        self.source = source
        self.ttl = ttl
        self.clock = clock
        self._cached: set[str] = set()
        self._expires = float("-inf")

    async def allows(self, origin: str) -> bool:
        if self.any:
            return True
        normal = origin_of(origin)
        if normal is None:
            return False
        return normal in await self._origins()

    async def _origins(self) -> set[str]:
        if self.fixed is not None:
            return self.fixed
        if self.source is None:
            return set()
        now = self.clock()
        if now >= self._expires:
            try:
                self._cached = set(await self.source())
            except Exception:  # keep the last good set; a store hiccup must not fail reads
                log.exception("could not read the registered clients' origins")
            self._expires = now + self.ttl
        return self._cached

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        value = b"*" if self.any else origin
        return [(b"access-control-allow-origin", value), (b"vary", b"Origin"),
                (b"access-control-expose-headers", EXPOSE_HEADERS)]

    def preflight_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"access-control-allow-origin", b"*" if self.any else origin),
                (b"vary", b"Origin"),
                (b"access-control-allow-methods", ALLOW_METHODS),
                (b"access-control-allow-headers", ALLOW_HEADERS),
                (b"access-control-max-age", MAX_AGE)]
