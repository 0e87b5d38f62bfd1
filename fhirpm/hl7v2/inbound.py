"""Inbound: one v2 message -> logged raw -> mapped -> ONE unit of work through the
Repository (the path REST writes end in; `commit.py`) -> acknowledgements.

Owns the order of effects that makes delivery exactly-once in outcome: the raw message is
committed first, with the claim of its (MSH-3, MSH-4, MSH-10) (so an enhanced-mode accept
ACK is truthful and nothing is lost); a resend with the same key is answered with the
stored ACK and not reprocessed; the application ACK is built only after the transaction
committed, and sent once the record of the outcome is. Mapping is idempotent as
well (conditional updates on business identifiers), because senders also resend with new
control ids.

Update semantics: the engine yields partial resources; `commit.py` merges each over what
is stored (an element the message did not send is kept, one it nulled with `""` is
removed, identifiers accumulate), reading inside the unit it writes in, so no concurrent
change can be lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fhirpm.audit.security import audit_of
from fhirpm.config import Hl7Settings
from fhirpm.errors import Category, FhirError
from fhirpm.hl7v2 import ack, parser
from fhirpm.hl7v2.commit import Committer, Written
from fhirpm.hl7v2.engine import Engine, Mapped, MappingSet, Options
from fhirpm.hl7v2.messages import FINAL, LoggedMessage, MessageLog
from fhirpm.hl7v2.parser import Header, Message, V2Error
from fhirpm.repository.interactions import Interactions
from fhirpm.storage.port import UnitOfWork, VersionConflict

log = logging.getLogger("fhirpm.hl7v2")

Early = Callable[[str], Awaitable[None]]


@dataclass
class Outcome:
    acks: list[str]  # ACK messages to send back, in order
    message: LoggedMessage | None = None
    duplicate: bool = False
    resources: list[str] = field(default_factory=list)


class Inbound:
    def __init__(self, interactions: Interactions, settings: Hl7Settings, base: str,
                 engine: Engine | None = None) -> None:
        self.ix = interactions
        self.settings = settings
        self.base = base
        self.engine = engine or Engine(MappingSet.load(*_mapping_dirs(settings)))
        self.log = MessageLog(interactions.repo.store, dedup_days=settings.dedup_days)
        self.committer = Committer(interactions, base)
        # (MSH-3, MSH-4, MSH-10) being processed here: a copy arriving meanwhile on another
        # connection is told to resend later, not processed beside it
        self._in_flight: set[tuple[str, str, str]] = set()

    # -- the pipeline ---------------------------------------------------------------------

    async def receive(self, raw: bytes, peer: str = "", early: Early | None = None) -> Outcome:
        """Handle one framed message; never raises for anything the sender did. `early`
        sends an enhanced-mode accept ACK as soon as the raw message is committed."""
        header = _sniff_header(raw)
        sender = self.settings.sender(*(header or ("", "")))
        try:
            msg = parser.parse(raw, sender.charset)
        except V2Error as err:
            return await self._rejected(raw, peer, err)
        h = msg.header
        key = (h.sending_application, h.sending_facility, h.control_id)
        if h.control_id and key in self._in_flight:
            return Outcome([self._ack(h, "AE", _busy())])  # its first copy is still running
        self._in_flight.add(key)
        try:
            claim = asyncio.ensure_future(self._claim(raw, h, peer))
            await asyncio.sleep(0)  # the claim is on its way to the store's writer thread:
            mapped = self._map(msg)  # map meanwhile (discarded if it is a resend)
            record = await claim
            if record.status in FINAL:
                log.info("hl7 duplicate answered from the log",
                         extra={"control_id": h.control_id, "sender": h.sending_application})
                return Outcome(record.acks, record, duplicate=True)
            return await self.process(record, msg, early, mapped)
        except _Busy:  # the same message arrived twice at once on two connections
            return Outcome([self._ack(h, "AE", _busy())])
        finally:
            self._in_flight.discard(key)

    async def _claim(self, raw: bytes, h: Header, peer: str) -> LoggedMessage:
        """The message's record: new, its dedup key claimed (one write, no read); or,
        when the key is held, what holds it: a final record (a resend, answered from the
        log) or one that was cut off before its answer (processed again)."""
        record = self.log.new(raw, h, peer)
        if not h.control_id:
            if h.enhanced and ack.wanted(h.accept_ack, ok=True):
                return await self.log.create(raw, h, peer)  # logged before the accept ACK
            return record  # nothing to claim: recorded once answered
        try:
            await self.log.claim(record)
            return record
        except VersionConflict:
            previous = await self.log.duplicate_of(h)
        if previous is None:  # the claim expired between the two trips
            raise _Busy()
        return previous

    def _map(self, msg: Message) -> Mapped | Exception:
        """The message mapped, or why it could not be (raised by `process`, in order)."""
        try:
            return self.engine.map(msg, self._options(msg.header))
        except Exception as exc:
            return exc

    def _options(self, h: Header) -> Options:
        sender = self.settings.sender(h.sending_application, h.sending_facility)
        return Options(timezone=sender.timezone, authorities=dict(sender.authorities))

    async def process(self, record: LoggedMessage, msg: Message,
                      early: Early | None = None,
                      mapped: Mapped | Exception | None = None) -> Outcome:
        """Map (unless `mapped` is given) and commit a logged message, then record and
        return its ACKs (an accept ACK already given to `early` is not returned again,
        but is logged)."""
        h = msg.header
        acks: list[str] = []
        sent_early: list[str] = []
        if h.enhanced and ack.wanted(h.accept_ack, ok=True):
            accept = self._ack(h, "CA")  # the raw message is committed
            if early is not None:
                await early(accept)
                sent_early.append(accept)
            else:
                acks.append(accept)
        record.attempts += 1
        audit = audit_of(self.ix)

        success = acks + ([self._ack(h, "AA")] if not h.enhanced
                          or ack.wanted(h.app_ack, ok=True) else [])

        async def in_unit(unit: UnitOfWork, refs: list[str], versions: list[str]) -> None:
            # The record of the outcome and the receipt commit with the data they describe
            # (no trips of their own); if the unit then fails, they roll back with it and
            # the failure is recorded below. The receipt is the writes' audit record.
            self._processed(record, refs)
            record.acks = sent_early + success
            await self.log.save_in(unit, record)
            await audit.received(record, unit=unit, versions=versions)

        try:
            try:
                if mapped is None:
                    mapped = self.engine.map(msg, self._options(h))
                elif isinstance(mapped, Exception):
                    raise mapped
                async with audit.folded():  # the receipt records the writes
                    written = await self.commit(mapped, in_unit)
            except FhirError:
                raise
            except Exception as exc:  # a bug or a store failure: AE, kept for replay
                log.exception("hl7 message processing failed",
                              extra={"control_id": h.control_id})
                raise V2Error(Category.INTERNAL, f"Internal error: {exc}",
                              hl7_code="207") from exc
        except FhirError as err:
            v2err = err if isinstance(err, V2Error) else _as_v2(err)
            code = "AR" if v2err.reject else "AE"
            record.status, record.error = ("rejected" if v2err.reject else "error"), str(err)
            log.warning("hl7 message failed", extra={"control_id": h.control_id,
                                                      "error": str(err)})
            if not h.enhanced or ack.wanted(h.app_ack, ok=False):
                acks.append(self._ack(h, code, v2err))
        else:  # recorded in the message's unit of work (in_unit)
            self.log.saved(record)
            return Outcome(success, record, resources=written)
        record.acks = sent_early + acks
        await self.log.save(record)
        await audit.received(record)  # the audit trail (fhirpm.audit)
        return Outcome(acks, record, resources=record.resources)

    @staticmethod
    def _processed(record: LoggedMessage, written: list[str]) -> None:
        record.status, record.error, record.resources = "processed", "", written
        record.patient = next((r for r in written if r.startswith("Patient/")), "")

    async def _rejected(self, raw: bytes, peer: str, err: V2Error) -> Outcome:
        record = self.log.new(raw, None, peer)  # written once, with its answer
        record.status, record.error = "rejected", str(err)
        record.acks = [ack.build(None, "AR", error=err, application=self.settings.application,
                                 facility=self.settings.facility)]
        await self.log.save(record)
        await audit_of(self.ix).received(record)
        return Outcome(record.acks, record)

    def _ack(self, h: Header, code: str, error: V2Error | None = None) -> str:
        return ack.build(h, code, error=error, text=error.diagnostics if error else "",
                         application=self.settings.application, facility=self.settings.facility)

    async def commit(self, mapped: Mapped, written: Written | None = None) -> list[str]:
        """Write the mapped resources, all or nothing (fhirpm.hl7v2.commit)."""
        return await self.committer.commit(mapped, written)

    # -- replay -------------------------------------------------------------------------

    async def replay(self, record: LoggedMessage) -> Outcome:
        """Process a logged message again (`fhirpm hl7 replay`), bypassing the dedup."""
        sender = self.settings.sender(record.sender, record.facility)
        try:
            msg = parser.parse(record.raw_bytes, sender.charset)
        except V2Error as err:
            record.status, record.error = "rejected", str(err)
            await self.log.save(record)
            return Outcome(record.acks, record)
        return await self.process(record, msg)


class _Busy(Exception):
    """Another copy of the message holds its dedup key (see `_claim`)."""


def _busy() -> V2Error:
    return V2Error(Category.CONFLICT, "A message with this control id is being processed; "
                   "resend later", hl7_code="205", segment="MSH", sequence=1, position=10)


def _as_v2(err: FhirError) -> V2Error:
    """A repository error (validation, conflict) as an application error (AE, 207)."""
    out = V2Error(err.category, err.diagnostics, hl7_code="207")
    out.issues = err.issues
    return out


def _sniff_header(raw: bytes) -> tuple[str, str] | None:
    """MSH-3/MSH-4 before decoding, to pick the sender's charset override."""
    head = raw.lstrip(b"\xef\xbb\xbf \r\n")[:1024].decode("latin-1")
    if not head.startswith("MSH") or len(head) < 4:
        return None
    fields = head.split("\r")[0].split("\n")[0].split(head[3])
    comp = fields[1][:1] if len(fields) > 1 else "^"
    get = lambda n: fields[n - 1].split(comp)[0] if len(fields) >= n else ""  # noqa: E731
    return get(3), get(4)


def _mapping_dirs(settings: Hl7Settings) -> list[str]:
    from fhirpm.hl7v2.engine import default_mappings_dir

    return [str(default_mappings_dir()), *settings.mappings]

