"""Structured (JSON lines) logging for the server and CLI, and a cheap path for the
per-request access line.

`configure(json=True)` installs a `JsonLinesHandler`: one JSON object per line, written
out together at most `FLUSH_SECONDS` (20 ms) after the first of them rather than with a
system call per line (lines logged outside a running loop, and at exit, are written at
once; so is a backlog of `MAX_PENDING` lines). A process killed with SIGKILL can lose the
lines of its last 20 ms; nothing else is held back.

`AccessLine` writes the access log's line per request. When the only place its logger's
records would go is a `JsonLinesHandler` (the served configuration), it renders the line
itself, exactly as that handler would render `logger.info(msg, extra=fields)`, without a
LogRecord, caller lookup or formatter: at a few thousand requests per second those cost
more than the read being logged (docs/performance.md). Under any other configuration
(plain text, an extra handler, `caplog`, a filter that might drop or change records) it
logs a real record through the logger.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class _Clock:
    """ISO 8601 in UTC to the millisecond (`2026-11-28T16:27:03.123+00:00`), with the date
    and time of day formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._millis = -1
        self._now = ""

    def now(self) -> str:
        """The current time's stamp (the same text for every call within a millisecond)."""
        millis = time.time_ns() // 1_000_000
        if millis != self._millis:
            self._millis = millis
            self._now = self.stamp(*divmod(millis, 1000))
        return self._now

    def stamp(self, second: int, millis: int) -> str:
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{millis:03d}+00:00"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self._clock.stamp(int(record.created), int(record.msecs)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


FLUSH_SECONDS = 0.02
MAX_PENDING = 512


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """JSON lines to a stream, written in small batches (module doc)."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._pending: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # a flush is scheduled there

    def emit(self, record: logging.LogRecord) -> None:  # called holding the handler lock
        try:
            self._add(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Write one already rendered line (`AccessLine`)."""
        with self.lock:  # type: ignore[union-attr]
            self._add(line)

    def _add(self, line: str) -> None:
        self._pending.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop's thread: write now
            self._write_pending()
            return
        if len(self._pending) >= MAX_PENDING:
            self._write_pending()
        # Compared by loop, not a flag: a loop closed with our flush still queued (a test's
        # loop, say) must not leave every later line waiting for a flush that never runs.
        if self._flush_on is not loop:
            self._flush_on = loop
            loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            self._write_pending()

    def _write_pending(self) -> None:
        lines, self._pending = self._pending, []
        if not lines or self.stream is None:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            if hasattr(self.stream, "flush"):
                self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # a closed or broken stream: report it as logging does
            if logging.raiseExceptions and sys.stderr is not None:
                print(f"--- Logging error: {len(lines)} lines lost ---", file=sys.stderr)


def configure(level: str = "INFO", json: bool = True) -> None:
    if json:
        handler: logging.Handler = JsonLinesHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.flush()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class AccessLine:
    """One INFO line per call on `logger`: `line(msg, fields)` logs what
    `logger.info(msg, extra=fields)` would (module doc). `annotators`: filter classes known
    only to add attributes a record lacks (the request id) and to pass every record; a line
    carrying those attributes may skip them."""

    def __init__(self, logger: logging.Logger,
                 annotators: tuple[type[logging.Filter], ...] = ()) -> None:
        self.logger = logger
        self.annotators = annotators
        self._clock = _Clock()

    def line(self, msg: str, fields: dict[str, Any]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = self._only_handler()
        if handler is None:  # a record, as logger.info(msg, extra=fields) would make
            record = logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, msg,
                                       (), None, extra=fields)
            logger.handle(record)
            return
        out = {"ts": self._clock.now(), "level": "info", "logger": logger.name, "msg": msg}
        out.update(fields)
        handler.write_line(orjson.dumps(out, default=str).decode())

    def request(self, request_id: str, method: str, path: str, status: int,
                duration_ms: float, client: str | None, interaction: str) -> None:
        """The access line of one HTTP request: `line(f"{method} {path} {status}", {...})`
        with these fields, rendered from one dict in the line's own key order (all values
        are JSON types, so no fallback serialiser either)."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        msg = f"{method} {path} {status}"
        handler = self._only_handler()
        if handler is None:
            self.line(msg, {"request_id": request_id, "method": method, "path": path,
                            "status": status, "duration_ms": duration_ms, "client": client,
                            "interaction": interaction})
            return
        handler.write_line(orjson.dumps({
            "ts": self._clock.now(), "level": "info", "logger": logger.name, "msg": msg,
            "request_id": request_id, "method": method, "path": path, "status": status,
            "duration_ms": duration_ms, "client": client, "interaction": interaction,
        }).decode())

    def _only_handler(self) -> JsonLinesHandler | None:
        """The JsonLinesHandler that alone would see this logger's INFO records, if any."""
        found: JsonLinesHandler | None = None
        current: logging.Logger | None = self.logger
        while current is not None:
            if current.filters or current.disabled:
                return None
            for handler in current.handlers:
                if found is not None or type(handler) is not JsonLinesHandler:
                    return None
                if handler.level > logging.INFO:
                    return None
                for known in handler.filters:  # a loop, not all(...): no generator per line
                    if not isinstance(known, self.annotators):
                        return None
                found = handler
            current = current.parent if current.propagate else None
        return found
