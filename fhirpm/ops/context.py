"""The per-request context: request id, client address and the labels metrics use.

The edge middleware (`fhirpm.ops.middleware`) creates one `Exchange` per HTTP request and
makes it current for the request's task, so any code below (log records, audit, the bundle
handler naming its interaction) can reach it without being handed it. A request id sent by
the client is kept when it is sane; otherwise a new one is made.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# What a client may send as X-Request-ID: log-safe characters only, bounded length.
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


@dataclass(slots=True, eq=False)  # identity semantics: a key while it is in flight
class Exchange:
    """One HTTP request as the operations layer sees it (mutable while it runs)."""

    request_id: str
    method: str
    path: str
    client: str | None  # the client's IP (after trusted forwarded headers)
    scheme: str
    started: float = 0.0  # perf_counter() at arrival
    label: str | None = None  # an interaction named by the handler (batch | transaction)
    timed_out: bool = False  # the time limit cancelled it (fhirpm.ops.deadline)
    status: int = 0  # the response's status once it has started; 0 until then
    task: asyncio.Task[Any] | None = None  # serving it, while a time limit applies


_current: ContextVar[Exchange | None] = ContextVar("fhirpm_exchange", default=None)


def current() -> Exchange | None:
    """The request being served by this task, if any."""
    return _current.get()


def current_request_id() -> str | None:
    exchange = _current.get()
    return exchange.request_id if exchange is not None else None


# New ids: a random per-process prefix and a counter, unique across nodes and restarts
# without a system call per request (request ids are correlation handles, not secrets).
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def request_id(incoming: bytes | None) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    if incoming is not None and _SANE_ID.match(incoming):
        return incoming.decode("ascii")
    return f"{_PREFIX}-{next(_COUNTER):x}"


def label_interaction(name: str) -> None:
    """Name the current request's interaction where the path alone cannot (POST [base])."""
    exchange = _current.get()
    if exchange is not None and exchange.label is None:
        exchange.label = name


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record logged while a request is served (handler filter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            exchange = _current.get()
            if exchange is not None:
                record.request_id = exchange.request_id
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put the request-id filter on every handler of `logger` (the root by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
