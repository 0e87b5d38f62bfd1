"""Wiring of the bridge: the MLLP listener feeding `Inbound`, and the outbound worker fed
by the change feed; started and stopped with the app (`fhirpm serve --mllp`) or alone
(`fhirpm hl7 listen`). Inside the app it also registers with the operations layer
(`register`): readiness check `mllp` (the listener accepts connections) and the metrics
`fhirpm_hl7_messages_total{type,status}` and `fhirpm_hl7_outbox_messages{state}`."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from fhirpm.changes import ChangeFeed
from fhirpm.config import Hl7Settings
from fhirpm.errors import Category
from fhirpm.hl7v2 import ack
from fhirpm.hl7v2.inbound import Inbound, Outcome
from fhirpm.hl7v2.mllp import MllpServer
from fhirpm.hl7v2.parser import V2Error
from fhirpm.repository.interactions import Interactions


class Bridge:
    def __init__(self, interactions: Interactions, settings: Hl7Settings, base: str, *,
                 outbound: bool = True, feed: ChangeFeed | None = None) -> None:
        self.settings = settings
        self.inbound = Inbound(interactions, settings, base)
        self.server = MllpServer(self.handle, settings.host, settings.port,
                                 max_frame_bytes=settings.max_frame_bytes,
                                 idle_timeout=settings.idle_timeout,
                                 ssl_context=server_ssl(settings), reject=self._too_large)
        self.outbound = None
        if outbound and settings.destinations:
            from fhirpm.hl7v2.outbound import Outbound

            self.outbound = Outbound(interactions.repo.store, settings, feed=feed)
        self.received: Any = None  # the messages counter, once registered with ops

    async def handle(self, data: bytes, peer: str,
                     early: Callable[[str], Awaitable[None]]) -> list[str]:
        outcome = await self.inbound.receive(data, peer, early)
        if self.received is not None:
            self.received.inc(self._labels(outcome))
        return outcome.acks

    # -- operations: readiness and metrics ---------------------------------------------

    def register(self, ops: Any) -> None:
        """Add the bridge's readiness check and metrics to the app's operations layer
        (`app.state.ops`, fhirpm.ops.wiring)."""
        ops.readiness.add("mllp", self.listening)
        self.received = ops.metrics.counter(
            "fhirpm_hl7_messages_total", "HL7 v2 messages received, by message type and "
            "outcome (processed, error, rejected, duplicate)", ("type", "status"))
        if self.outbound is not None:
            ops.metrics.callback("fhirpm_hl7_outbox_messages", "HL7 v2 messages waiting "
                                 "for delivery (pending) and given up on (dead)", ("state",),
                                 self._outbox_sizes)

    def listening(self) -> bool | str:
        server = self.server._server
        if server is None or not server.is_serving():
            return "not listening"
        return True

    def _labels(self, outcome: Outcome) -> tuple[str, str]:
        record = outcome.message
        status = "duplicate" if outcome.duplicate else record.status if record else "error"
        kind = record.type if record is not None else ""
        # bounded label values: only the events the mappings know
        return (kind if kind in self.inbound.engine.maps.events else "other"), status

    async def _outbox_sizes(self) -> list[tuple[tuple[str], float]]:
        assert self.outbound is not None
        return [(("pending",), float(len(await self.outbound.pending()))),
                (("dead",), float(len(await self.outbound.dead_letters())))]

    def _too_large(self, reason: str) -> str:
        err = V2Error(Category.TOO_LARGE, reason, hl7_code="207")
        return ack.build(None, "AR", error=err, application=self.settings.application,
                         facility=self.settings.facility)

    async def start(self) -> None:
        await self.server.start()
        if self.outbound is not None:
            await self.outbound.start()

    async def stop(self) -> None:
        if self.outbound is not None:
            await self.outbound.stop()
        await self.server.stop()


def server_ssl(settings: Hl7Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context
