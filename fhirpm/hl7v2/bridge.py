"""Wiring of the bridge: the MLLP listener feeding `Inbound`, and the outbound worker fed
by the change feed; started and stopped with the app (`fhirpm serve --mllp`) or alone
(`fhirpm hl7 listen`)."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from fhirpm.changes import ChangeFeed
from fhirpm.config import Hl7Settings
from fhirpm.errors import Category
from fhirpm.hl7v2 import ack
from fhirpm.hl7v2.inbound import Inbound
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

    async def handle(self, data: bytes, peer: str,
                     early: Callable[[str], Awaitable[None]]) -> list[str]:
        outcome = await self.inbound.receive(data, peer, early)
        return outcome.acks

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
