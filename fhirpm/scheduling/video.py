"""Virtual visits: a booked virtual Appointment carries a join link from a video provider.

Which appointments are virtual is `model.is_virtual` (a serviceType coding
`visit-type|virtual`). When one is booked (or checked in) without a link, `VideoRule` asks
the configured `VideoProvider` for a room and stores it on the Appointment, in the same
unit of work as the booking, on every write path.

Where the link lives: R4 has no element for it; R5 added `Appointment.virtualService`
(VirtualServiceDetail). fhirpm uses that element's R4 cross-version extension
(`VIRTUAL_SERVICE`), a complex extension with the R5 element names as sub-extensions:

    {"url": VIRTUAL_SERVICE, "extension": [
        {"url": "channelType", "valueCoding": {"system": CHANNELS, "code": "jitsi"}},
        {"url": "address", "valueUrl": "https://meet.example.org/fhirpm-3q...Zk"},
        {"url": "sessionKey", "valueString": "fhirpm-3q...Zk"}]}

so a patient app reading its own Appointment finds the link, and an R5 migration maps it
one to one. The link is stable: once stored it is kept; an update that drops it gets the
previous one back; a client may put its own (a pasted meeting link) and it is respected.

Providers: `VideoProvider` is the interface (`JitsiRooms` is built in: unguessable room
names, 128 random bits, under a configurable base such as a self-hosted Jitsi). Others
register a factory with `register_provider`; a provider runs inside the booking's unit of
work, so one that calls a remote API should answer quickly (or hand out pre-made rooms).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fhirpm.scheduling import model

if TYPE_CHECKING:
    from fhirpm.config import SchedulingSettings
    from fhirpm.repository.service import Change, Repository
    from fhirpm.storage.port import UnitOfWork

VIRTUAL_SERVICE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
CHANNELS = model.CS + "video-provider"  # channelType codes: the provider's name
# Statuses in which a virtual appointment needs its link (the visit is on).
LINKED = frozenset({"booked", "arrived", "checked-in"})


@dataclass(frozen=True, slots=True)
class VideoRoom:
    url: str  # where patient and clinician join
    session_key: str | None = None  # the provider's room or meeting id


class VideoProvider(Protocol):
    """Hands out a room for one appointment (called once per appointment)."""

    name: str  # the channelType code stored with the link

    async def room(self, appointment: dict[str, Any]) -> VideoRoom: ...


class JitsiRooms:
    """Rooms on a Jitsi Meet server (any server taking the room name as the URL path).

    Jitsi creates a room when the first person joins, so a room is just an unguessable
    name: 128 random bits, nothing about the patient or practice in it."""

    name = "jitsi"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/") + "/"

    async def room(self, appointment: dict[str, Any]) -> VideoRoom:
        name = "fhirpm-" + secrets.token_urlsafe(16)
        return VideoRoom(self.base_url + name, name)


ProviderFactory = Callable[[str], VideoProvider]  # the configured base URL -> a provider
_PROVIDERS: dict[str, ProviderFactory] = {"jitsi": JitsiRooms}


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make another provider selectable as FHIRPM_SCHEDULING__VIDEO_PROVIDER=<name>."""
    _PROVIDERS[name] = factory


def provider_from_settings(settings: SchedulingSettings) -> VideoProvider | None:
    """The configured provider; None when no video base URL is set (no links)."""
    if not settings.video_base_url:
        return None
    factory = _PROVIDERS.get(settings.video_provider)
    if factory is None:
        raise ValueError(f"unknown video provider {settings.video_provider!r} "
                         f"(known: {', '.join(sorted(_PROVIDERS))})")
    return factory(settings.video_base_url)


def join_link(appointment: dict[str, Any] | None) -> str | None:
    """The stored join URL of an Appointment, if any."""
    found = model.extension(appointment or {}, VIRTUAL_SERVICE)
    for sub in (found or {}).get("extension") or ():
        if sub.get("url") == "address" and isinstance(sub.get("valueUrl"), str):
            return sub["valueUrl"]
    return None


def virtual_service(provider: str, room: VideoRoom) -> dict[str, Any]:
    """The extension recording a room (R5 Appointment.virtualService, see module doc)."""
    parts: list[dict[str, Any]] = [
        {"url": "channelType", "valueCoding": {"system": CHANNELS, "code": provider}},
        {"url": "address", "valueUrl": room.url},
    ]
    if room.session_key:
        parts.append({"url": "sessionKey", "valueString": room.session_key})
    return {"url": VIRTUAL_SERVICE, "extension": parts}


class VideoRule:
    """Write rule on Appointment: a virtual visit that is on gets (and keeps) a join link."""

    def __init__(self, provider: VideoProvider) -> None:
        self.provider = provider

    async def apply(self, repo: Repository, unit: UnitOfWork, change: Change) -> None:
        after = change.after
        if after is None or after.get("status") not in LINKED or not model.is_virtual(after):
            return
        if join_link(after) is not None:
            return
        kept = model.extension(change.before or {}, VIRTUAL_SERVICE)
        link = kept if join_link(change.before) else virtual_service(
            self.provider.name, await self.provider.room(after))
        current = await unit.current("Appointment", change.id)
        if current is None:  # not reachable: the write being completed is in this unit
            return
        linked = {**after, "extension": [*(after.get("extension") or ()), link]}
        # The writer's own method: completing its write needs no permission it lacks.
        method = change.method if change.method in ("POST", "PUT", "PATCH") else "PUT"
        await repo.replace(unit, current, linked, method)


def install(repo: Repository, settings: SchedulingSettings) -> VideoProvider | None:
    """Register the rule when a provider is configured; returns the provider."""
    provider = provider_from_settings(settings)
    if provider is not None:
        repo.add_rule("Appointment", VideoRule(provider))
    return provider
