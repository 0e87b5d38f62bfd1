"""Outbound: a durable outbox fed by the change feed, delivered per destination in order.

Events (from the committed version and the one before it):
  Appointment  created -> SIU^S12; start/end changed -> S13; other change -> S14;
               cancelled -> S15; entered-in-error or deleted -> S17; noshow -> S26
  Patient      created -> ADT^A04; changed -> A08; gained a `replaces` link -> A40
  Encounter    became finished -> ADT^A03
  ChargeItem   created (or became billable) -> DFT^P03
The change-feed consumer (`hl7v2.outbound`, durable cursor, at least once) turns each into
one outbox document per interested destination, keyed `<destination>|<seq>|<n>`: a
redelivered change writes the same key, so nothing is queued twice. One worker per
destination sends the oldest entry over MLLP and removes it only on AA/CA; AE or a network
failure retries with doubling backoff; AR or too many attempts move it to the dead letters
(`hl7v2.deadletter`). Nothing behind a failing message overtakes it (per-destination
order). A crash between sending and removing resends the same message (same MSH-10), which
the partner's de-duplication absorbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from fhirpm.changes import ChangeFeed
from fhirpm.config import Destination, Hl7Settings
from fhirpm.fhir import jsonio
from fhirpm.hl7v2 import ack, writer
from fhirpm.hl7v2.mllp import MllpClient
from fhirpm.storage.port import ResourceStore, ResourceVersion, VersionConflict

log = logging.getLogger("fhirpm.hl7v2.outbound")

OUTBOX = "hl7v2.outbox"
DEAD = "hl7v2.deadletter"
SENT = "hl7v2.sent"
CONSUMER = "hl7v2.outbound"
SENT_DAYS = 7


class Outbound:
    def __init__(self, store: ResourceStore, settings: Hl7Settings, *,
                 feed: ChangeFeed | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock  # seconds since the epoch: when entries are due (tests fix it)
        # the app's feed runs our consumer with the others; alone we follow our own
        self._own_feed = feed is None
        self.feed = feed or ChangeFeed(store)
        if feed is not None:
            feed.subscribe(CONSUMER, self.enqueue)
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: dict[str, asyncio.Event] = {}
        self._stopping = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping.clear()
        if self._own_feed:
            self._tasks.append(asyncio.create_task(self.feed.follow(CONSUMER, self.enqueue),
                                                   name="hl7v2-outbound-feed"))
        for dest in self.settings.destinations:
            self._wake[dest.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._worker(dest),
                                                   name=f"hl7v2-outbound:{dest.name}"))

    async def stop(self) -> None:
        self._stopping.set()
        if self._own_feed:
            await self.feed.stop()
        for event in self._wake.values():
            event.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # -- change feed -> outbox ------------------------------------------------------------

    async def enqueue(self, changes: Sequence[ResourceVersion]) -> None:
        for version in changes:
            if version.type not in ("Appointment", "Patient", "Encounter", "ChargeItem"):
                continue
            event = await self.event_for(version)
            if event is None:
                continue
            built = await self.build(version, event)
            if built is None:
                continue
            for n, dest in enumerate(self.settings.destinations):
                if not _wants(dest, event):
                    continue
                await self._put_once(dest, version, n, event, built)

    async def _put_once(self, dest: Destination, version: ResourceVersion, n: int,
                        event: str, segments: list[str]) -> None:
        key = f"{dest.name}|{version.seq:020d}|{n}"
        code, _, trigger = event.partition("^")
        structure = {"SIU": "SIU_S12", "DFT": "DFT_P03"}.get(code) or (
            "ADT_A39" if trigger == "A40" else "ADT_A03" if trigger == "A03" else "ADT_A01")
        control = f"{version.seq}-{n}"  # stable: a resend carries the same MSH-10
        head = writer.msh(code, trigger, structure, application=self.settings.application,
                          facility=self.settings.facility, receiver=dest.receiving_application,
                          receiver_facility=dest.receiving_facility, version=dest.version,
                          control=control)
        body = {"message": writer.message([head, *segments]), "event": event,
                "resource": f"{version.type}/{version.id}/_history/{version.version}",
                "attempts": 0, "next_at": 0.0, "last_error": ""}
        with contextlib.suppress(VersionConflict):  # already queued by an earlier delivery
            await self.store.doc_put(OUTBOX, key, orjson.dumps(body), expected_rev=0)
            if dest.name in self._wake:
                self._wake[dest.name].set()

    async def event_for(self, v: ResourceVersion) -> str | None:
        before = (await self.store.vread(v.type, v.id, v.version - 1)
                  if v.version > 1 else None)
        old = jsonio.loads(before.body) if before and not before.deleted else None
        if v.deleted:
            return "SIU^S17" if v.type == "Appointment" and old else None
        new = jsonio.loads(v.body)
        if v.type == "Appointment":
            return _appointment_event(old, new)
        if v.type == "Patient":
            if _links(new, "replaces") - _links(old, "replaces"):
                return "ADT^A40"
            return "ADT^A04" if old is None else "ADT^A08"
        if v.type == "Encounter":
            finished = new.get("status") == "finished"
            return "ADT^A03" if finished and (old or {}).get("status") != "finished" else None
        if v.type == "ChargeItem":
            billable = new.get("status") in ("billable", "billed")
            was = (old or {}).get("status") in ("billable", "billed")
            return "DFT^P03" if billable and not was else None
        return None

    async def build(self, v: ResourceVersion, event: str) -> list[str] | None:
        """The segments after MSH for one event (None when a reference cannot be read)."""
        res = jsonio.loads(v.body) if not v.deleted else jsonio.loads(
            (await self.store.vread(v.type, v.id, v.version - 1)).body)
        if v.type == "Patient":
            segs = [f"EVN|{event.split('^')[1]}|{ack.timestamp()}", writer.pid(res)]
            if event == "ADT^A40":
                for link in res.get("link") or ():
                    if link.get("type") == "replaces":
                        old = await self._resolve(link["other"].get("reference", ""))
                        if old:
                            segs.append(writer.mrg(old))
            else:
                segs.append("PV1|1|N")
            return segs
        subject = await self._resolve(_patient_ref(res))
        if subject is None:
            log.warning("outbound: no patient for %s/%s", v.type, v.id)
            return None
        if v.type == "Appointment":
            others = []
            for p in res.get("participant") or ():
                ref = (p.get("actor") or {}).get("reference", "")
                kind = ref.split("/")[0]
                if kind in ("Practitioner", "Location", "Device"):
                    found = await self._resolve(ref)
                    if found:
                        others.append((kind, found))
            return [*writer.sch(res), writer.pid(subject), *writer.resources_group(others)]
        if v.type == "Encounter":
            return [f"EVN|A03|{ack.timestamp()}", writer.pid(subject), writer.pv1(res)]
        return [f"EVN|P03|{ack.timestamp()}", writer.pid(subject), writer.ft1(res)]

    async def _resolve(self, reference: str) -> dict[str, Any] | None:
        parts = reference.split("/")
        if len(parts) < 2:
            return None
        found = await self.store.read(parts[-2], parts[-1])
        return jsonio.loads(found.body) if found and not found.deleted else None

    # -- outbox -> partner -------------------------------------------------------------

    async def _worker(self, dest: Destination) -> None:
        wake = self._wake[dest.name]
        client = MllpClient(dest.host, dest.port, ssl_context=_client_ssl(dest))
        try:
            while not self._stopping.is_set():
                wake.clear()
                wait = await self.deliver_one(dest, client)
                if wait is None:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
        finally:
            await client.close()

    async def deliver_one(self, dest: Destination, client: MllpClient) -> float | None:
        """Try the oldest entry for `dest`. Returns None to go on at once, else seconds to
        wait (nothing due, or backing off)."""
        docs = await self.store.doc_list(OUTBOX, f"{dest.name}|", limit=1)
        if not docs:
            return 60.0
        doc = docs[0]
        entry = orjson.loads(doc.body)
        due = entry["next_at"] - self.clock()
        if due > 0:
            return due
        try:
            replies = await client.send(entry["message"])
            info = ack.read(replies[-1])
        except (OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError,
                Exception) as exc:  # a partner fault never stops the worker
            await client.close()
            return await self._failed(dest, doc.key, doc.rev, entry, f"send failed: {exc}",
                                      dead=False)
        if info.ok:
            await self.store.doc_put(SENT, doc.key, doc.body,
                                     expires_at=int(self.clock()) + SENT_DAYS * 86400)
            await self.store.doc_delete(OUTBOX, doc.key)
            return None
        return await self._failed(dest, doc.key, doc.rev, entry,
                                  f"{info.code}: {info.error or info.text}",
                                  dead=info.code in ("AR", "CR"))

    async def _failed(self, dest: Destination, key: str, rev: int, entry: dict[str, Any],
                      error: str, *, dead: bool) -> float | None:
        entry["attempts"] += 1
        entry["last_error"] = error
        log.warning("outbound to %s failed: %s", dest.name, error,
                    extra={"destination": dest.name, "attempts": entry["attempts"]})
        if dead or entry["attempts"] >= self.settings.max_attempts:
            await self.store.doc_put(DEAD, key, orjson.dumps(entry))
            await self.store.doc_delete(OUTBOX, key)
            return None
        delay = min(self.settings.retry_initial * 2 ** (entry["attempts"] - 1),
                    self.settings.retry_max)
        entry["next_at"] = self.clock() + delay
        with contextlib.suppress(VersionConflict):
            await self.store.doc_put(OUTBOX, key, orjson.dumps(entry), expected_rev=rev)
        return delay

    async def pending(self, dest: str | None = None) -> list[dict[str, Any]]:
        return [{"key": d.key, **orjson.loads(d.body)} for d in
                await self.store.doc_list(OUTBOX, f"{dest}|" if dest else "", limit=10_000)]

    async def dead_letters(self) -> list[dict[str, Any]]:
        return [{"key": d.key, **orjson.loads(d.body)} for d in
                await self.store.doc_list(DEAD, "", limit=10_000)]


def _appointment_event(old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    status = new.get("status")
    if old is None:
        return {"cancelled": "SIU^S15", "noshow": "SIU^S26",
                "entered-in-error": "SIU^S17"}.get(status or "", "SIU^S12")
    if status != old.get("status"):
        changed = {"cancelled": "SIU^S15", "noshow": "SIU^S26", "entered-in-error": "SIU^S17"}
        if status in changed:
            return changed[status]
    if (new.get("start"), new.get("end")) != (old.get("start"), old.get("end")):
        return "SIU^S13"
    return "SIU^S14"


def _links(patient: dict[str, Any] | None, kind: str) -> set[str]:
    return {(link.get("other") or {}).get("reference", "")
            for link in (patient or {}).get("link") or () if link.get("type") == kind}


def _patient_ref(res: dict[str, Any]) -> str:
    for name in ("subject", "patient", "beneficiary"):
        ref = (res.get(name) or {}).get("reference")
        if ref:
            return ref
    for p in res.get("participant") or ():
        ref = (p.get("actor") or {}).get("reference", "")
        if ref.startswith("Patient/"):
            return ref
    return ""


def _wants(dest: Destination, event: str) -> bool:
    return any(event == want or event.split("^")[0] == want for want in dest.events)


def _client_ssl(dest: Destination) -> Any:
    if not dest.tls:
        return None
    import ssl

    context = ssl.create_default_context(cafile=dest.tls_ca)
    return context
