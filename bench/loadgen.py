"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (loopback only).

Cheap per request (no HTTP library on the client side), so on a 2-core machine the client
steals as little CPU from the server as possible and the same client measures both the
server and its floor. Bounded by a request count and a duration, whichever comes first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Request = tuple[str, str, bytes | None]  # method, path, body
NextRequest = Callable[[int], Request]  # n-th request of the run -> request


@dataclass
class RunResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, completed requests
    statuses: dict[int, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # CPU seconds the server process used meanwhile, when known

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request(self) -> float:
        return self.server_cpu / self.requests if self.requests else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    async def send(self, method: str, path: str, body: bytes | None,
                   headers: bytes) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n".encode() + headers
        if body is not None:
            head += b"Content-Length: %d\r\n" % len(body)
        self.writer.write(head + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length) if length else b""


async def run(host: str, port: int, next_request: NextRequest, *, connections: int,
              duration: float, max_requests: int,
              headers: dict[str, str] | None = None) -> RunResult:
    """Keep `connections` requests in flight until `duration` s or `max_requests` are done."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    result = RunResult()
    counter = iter(range(max_requests))
    started = time.perf_counter()
    deadline = started + duration

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        conn = _Connection(reader, writer, f"{host}:{port}")
        try:
            for n in counter:
                if time.perf_counter() >= deadline:
                    break
                method, path, body = next_request(n)
                t0 = time.perf_counter()
                status, _ = await conn.send(method, path, body, extra)
                result.latencies.append(time.perf_counter() - t0)
                result.requests += 1
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status >= 400:
                    result.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


def new_loop_runner() -> asyncio.Runner:
    """uvloop when available (as the servers use), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
