"""MLLP over asyncio: a listener and a sender client.

Framing: <VT 0x0B> message <FS 0x1C><CR 0x0D>. The listener keeps connections open, handles
one message at a time per connection (the next frame is read only after the previous one is
answered, which keeps each sender's order), enforces a frame-size limit and an idle timeout,
and speaks TLS when given an SSL context. A frame over the limit is answered with a NAK
(AR) and the connection closed, since the rest of the stream cannot be trusted. Bytes outside
frames (stray newlines between messages) are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

log = logging.getLogger("fhirpm.hl7v2.mllp")

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
END = FS + CR

# handler(frame bytes, peer, send_early) -> the replies to write, in order
Handler = Callable[[bytes, str, Callable[[str], Awaitable[None]]], Awaitable[list[str]]]


class FrameTooLarge(Exception):
    pass


def frame(message: str | bytes, encoding: str = "utf-8") -> bytes:
    data = message.encode(encoding) if isinstance(message, str) else message
    return VT + data + END


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes | None:
    """The next framed payload; None at a clean end of stream."""
    while True:  # skip anything before the start block
        byte = await reader.read(1)
        if not byte:
            return None
        if byte == VT:
            break
    try:
        data = await reader.readuntil(END)
    except asyncio.LimitOverrunError:
        raise FrameTooLarge(f"frame exceeds {max_bytes} bytes") from None
    except asyncio.IncompleteReadError:
        return None
    if len(data) - 2 > max_bytes:
        raise FrameTooLarge(f"frame exceeds {max_bytes} bytes")
    return data[:-2]


class MllpServer:
    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 2575, *,
                 max_frame_bytes: int = 4 * 1024 * 1024, idle_timeout: float = 300.0,
                 ssl_context: ssl.SSLContext | None = None, encoding: str = "utf-8",
                 reject: Callable[[str], str] | None = None) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self.ssl_context = ssl_context
        self.encoding = encoding  # of our replies (ACKs are ASCII in practice)
        self.reject = reject  # builds the NAK for an oversized frame
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.ssl_context,
            limit=self.max_frame_bytes + 16)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("mllp listening", extra={"host": self.host, "port": self.port,
                                          "tls": self.ssl_context is not None})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])

        async def send(text: str) -> None:
            writer.write(frame(text, self.encoding))
            await writer.drain()

        try:
            while True:
                try:
                    data = await asyncio.wait_for(read_frame(reader, self.max_frame_bytes),
                                                  self.idle_timeout)
                except TimeoutError:
                    log.info("mllp idle timeout", extra={"peer": peer})
                    break
                except FrameTooLarge as exc:
                    if self.reject is not None:
                        await send(self.reject(str(exc)))
                    log.warning("mllp frame too large", extra={"peer": peer})
                    break
                if data is None:
                    break
                for reply in await self.handler(data, peer, send):
                    await send(reply)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("mllp connection dropped", extra={"peer": peer, "error": str(exc)})
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class MllpClient:
    """A sender: one persistent connection, one message in flight, waits for its ACK."""

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 30.0, max_frame_bytes: int = 4 * 1024 * 1024) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.max_frame_bytes = max_frame_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=self.ssl_context, limit=self.max_frame_bytes + 16),
            self.timeout)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, message: str | bytes, *, replies: int = 1) -> list[str]:
        """Send one message and read `replies` frames (2 in enhanced mode: accept + app)."""
        if self._writer is None or self._reader is None:
            await self.connect()
        assert self._writer is not None and self._reader is not None
        self._writer.write(frame(message))
        await self._writer.drain()
        out = []
        for _ in range(replies):
            data = await asyncio.wait_for(read_frame(self._reader, self.max_frame_bytes),
                                          self.timeout)
            if data is None:
                raise ConnectionError("connection closed before the acknowledgement")
            out.append(data.decode("utf-8", errors="replace"))
        return out
