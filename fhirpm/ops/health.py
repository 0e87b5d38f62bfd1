"""Liveness and readiness: `/healthz` (the process answers) and `/readyz` (it can serve).

Readiness is a registry of named checks that any part adds to (`readiness.add`): the
operations layer adds the app's lifecycle (startup finished, not shutting down) and the
store (one cheap document read, which only succeeds once the store is open and migrated);
the HL7 v2 bridge adds its MLLP listener. A check returns True/None when fine, False or a
reason string when not; it may be async; it is given `timeout` seconds. The answer names
each check's state but never an exception's text (the endpoint is unauthenticated).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("fhirpm.ops.health")

CheckResult = bool | str | None
Check = Callable[[], CheckResult | Awaitable[CheckResult]]


@dataclass(frozen=True, slots=True)
class _Named:
    check: Check
    timeout: float


class Readiness:
    def __init__(self) -> None:
        self._checks: dict[str, _Named] = {}

    def add(self, name: str, check: Check, *, timeout: float = 2.0) -> None:
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is already registered")
        self._checks[name] = _Named(check, timeout)

    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self) -> tuple[bool, dict[str, str]]:
        """(ready, {check: "ok" | why not}); the checks run concurrently."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._one(n) for n in names))
        report = dict(zip(names, results, strict=True))
        return all(r == "ok" for r in report.values()), report

    async def _one(self, name: str) -> str:
        named = self._checks[name]
        try:
            result = named.check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, named.timeout)
        except TimeoutError:
            return f"timed out after {named.timeout:g} s"
        except Exception as exc:
            log.warning("readiness check %s failed", name, exc_info=True)
            return f"failed ({type(exc).__name__})"
        if result is None or result is True:
            return "ok"
        return result if isinstance(result, str) and result else "failing"


class Lifecycle:
    """Whether the app finished starting and has not begun shutting down."""

    def __init__(self) -> None:
        self.state = "starting"

    def check(self) -> CheckResult:
        return True if self.state == "running" else self.state
