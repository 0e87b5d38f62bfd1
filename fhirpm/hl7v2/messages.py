"""The raw message log: every inbound message as received (bytes kept exactly), its status,
its acknowledgements and the resources it produced, in the store's Document API.

Key scheme (documents are listed by key prefix, so each listing is an index):
  hl7v2.messages  <received UTC, sortable>-<random>     the record (listing by date; sender,
                                                         type and status filter the listing)
  hl7v2.dedup     <MSH-3>|<MSH-4>|<MSH-10>               the claim: the record as received
                                                         (expires after N days)
  hl7v2.index     patient|<Patient/id>|<id>              messages that wrote a patient
Each document write is a store round trip (its own transaction) on the ingest path, so a
message costs three: before processing, the claim of its dedup key, which carries the whole
record as received (raw bytes, status `received`): a copy arriving meanwhile finds it, and
an enhanced-mode accept ACK may go out once it is committed; after processing, the record
with its outcome; then the patient index entry (the patient is known only then, and
listing by patient is unbounded in time). A new message needs no read: the claim is
attempted first, and only a refused claim (a resend) reads what holds the key.
Status: received -> processed | error | rejected. A claim with no record was cut off
between receipt and acknowledgement (crash): its resend is processed, not answered from the
log, and listings show it as `received` until then. The record is written before its index
entry, so an index entry never points at nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from fhirpm.hl7v2.parser import Header
from fhirpm.storage.port import ResourceStore, UnitOfWork, VersionConflict

MESSAGES = "hl7v2.messages"
DEDUP = "hl7v2.dedup"
INDEX = "hl7v2.index"
FINAL = ("processed", "error", "rejected")


@dataclass
class LoggedMessage:
    id: str
    received: str
    raw: str  # the bytes as received, as Latin-1 text (a lossless byte mapping)
    peer: str = ""
    sender: str = ""
    facility: str = ""
    control_id: str = ""
    type: str = ""  # ADT^A08
    status: str = "received"
    acks: list[str] = field(default_factory=list)  # ACK texts sent, in order
    error: str = ""
    resources: list[str] = field(default_factory=list)  # Type/id written
    patient: str = ""  # Patient/id
    attempts: int = 0
    rev: int = 0

    @property
    def raw_bytes(self) -> bytes:
        return self.raw.encode("latin-1")

    @property
    def dedup_key(self) -> str | None:
        return f"{self.sender}|{self.facility}|{self.control_id}" if self.control_id else None

    def to_json(self) -> bytes:
        return orjson.dumps({name: getattr(self, name) for name in _STORED})

    @classmethod
    def from_doc(cls, body: bytes, rev: int) -> LoggedMessage:
        return cls(**orjson.loads(body), rev=rev)


_STORED = tuple(f.name for f in fields(LoggedMessage) if f.name != "rev")  # the JSON record


def new_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%f") + "-" + os.urandom(3).hex()


class MessageLog:
    def __init__(self, store: ResourceStore, *, dedup_days: int = 30) -> None:
        self.store = store
        self.dedup_seconds = dedup_days * 86400

    def new(self, raw: bytes, header: Header | None, peer: str = "") -> LoggedMessage:
        """A record for a message just received (status `received`; nothing written)."""
        now = datetime.now(UTC)
        msg = LoggedMessage(id=new_id(now), received=now.isoformat(timespec="milliseconds"),
                            raw=raw.decode("latin-1"), peer=peer)
        if header is not None:
            msg.sender, msg.facility = header.sending_application, header.sending_facility
            msg.control_id = header.control_id
            msg.type = f"{header.message_code}^{header.event}"
        return msg

    async def claim(self, msg: LoggedMessage) -> None:
        """Claim the message's dedup key with the record as received (one write).

        Raises VersionConflict when the key is held already: a resend, or a copy being
        processed elsewhere (`duplicate_of` tells which)."""
        key = msg.dedup_key
        if key is not None:
            await self.store.doc_put(DEDUP, key, msg.to_json(), expected_rev=0,
                                     expires_at=int(time.time()) + self.dedup_seconds)

    async def create(self, raw: bytes, header: Header | None, peer: str = "") -> LoggedMessage:
        """Store a newly received message as a record of its own (status `received`) and
        claim its dedup key: for messages that must be in the log before they are
        processed without a dedup key to hold them (an enhanced-mode accept ACK).

        Raises VersionConflict when another copy claimed the key first (a concurrent resend).
        """
        msg = self.new(raw, header, peer)
        msg.rev = await self.store.doc_put(MESSAGES, msg.id, msg.to_json(), expected_rev=0)
        try:
            await self.claim(msg)
        except VersionConflict:  # another copy claimed it: this record is nobody's
            await self.store.doc_delete(MESSAGES, msg.id)
            raise
        return msg

    async def duplicate_of(self, header: Header) -> LoggedMessage | None:
        """What holds this message's dedup key: its record, or, when it has none yet (cut
        off, or still being processed elsewhere), the record as claimed."""
        if not header.control_id:
            return None
        doc = await self.store.doc_get(
            DEDUP, f"{header.sending_application}|{header.sending_facility}|{header.control_id}")
        if doc is None:
            return None
        claimed = _claimed(doc.body)
        if claimed is None:  # a key claimed before claims carried the record: its id
            return await self.get(doc.body.decode())
        return await self.get(claimed.id) or claimed

    async def get(self, id: str) -> LoggedMessage | None:
        doc = await self.store.doc_get(MESSAGES, id)
        return LoggedMessage.from_doc(doc.body, doc.rev) if doc else None

    async def save(self, msg: LoggedMessage) -> None:
        """Write the record with its outcome (compare-and-swap on its rev; 0: not yet
        written), then its patient index entry."""
        msg.rev = await self.store.doc_put(MESSAGES, msg.id, msg.to_json(),
                                           expected_rev=msg.rev)
        if msg.patient:
            await self.store.doc_put(INDEX, f"patient|{msg.patient}|{msg.id}", b"")

    async def save_in(self, unit: UnitOfWork, msg: LoggedMessage) -> None:
        """`save` inside `unit` (the message's own): the record commits with the data it
        describes. Call `saved(msg)` once the unit has committed."""
        await unit.doc_put(MESSAGES, msg.id, msg.to_json(), expected_rev=msg.rev)
        if msg.patient:
            await unit.doc_put(INDEX, f"patient|{msg.patient}|{msg.id}", b"")

    @staticmethod
    def saved(msg: LoggedMessage) -> None:
        msg.rev += 1  # the compare-and-swap of `save_in` held: one rev on

    async def list(self, *, sender: str | None = None, type: str | None = None,
                   patient: str | None = None, date: str | None = None,
                   status: str | None = None, limit: int = 100) -> list[LoggedMessage]:
        """Messages by patient (Patient/id, indexed), date prefix (2024-01-02 or 2024-01),
        sender (MSH-3), type (ADT^A08) and status, oldest first, the last `limit`."""
        if patient:
            ids = [d.key.rsplit("|", 1)[1] for d in
                   await self.store.doc_list(INDEX, f"patient|{patient}|", limit=100_000)]
            if date:
                ids = [i for i in ids if i.startswith(date.replace("-", ""))]
            found = [m for m in [await self.get(i) for i in sorted(ids)] if m]
        else:
            prefix = (date or "").replace("-", "")
            docs = await self.store.doc_list(MESSAGES, prefix, limit=1_000_000)
            found = [LoggedMessage.from_doc(d.body, d.rev) for d in docs]
            if status in (None, "received"):
                found = sorted([*found, *await self._unanswered(found, prefix)],
                               key=lambda m: m.id)
        found = [m for m in found if (not sender or m.sender == sender)
                 and (not type or m.type == type) and (not status or m.status == status)]
        return found[-limit:] if limit else found

    async def _unanswered(self, records: list[LoggedMessage], prefix: str
                          ) -> list[LoggedMessage]:
        """Claimed messages with no record (cut off before their answer), by id prefix."""
        have = {m.id for m in records}
        claims = [_claimed(d.body) for d in
                  await self.store.doc_list(DEDUP, "", limit=1_000_000)]
        return [c for c in claims if c is not None and c.id.startswith(prefix)
                and c.id not in have and await self.get(c.id) is None]


def _claimed(body: bytes) -> LoggedMessage | None:
    """The record a dedup claim carries (None: an older claim holding only the id)."""
    return LoggedMessage.from_doc(body, 0) if body[:1] == b"{" else None


def summary(msg: LoggedMessage) -> dict[str, Any]:
    """The record without its raw text, for listings."""
    return {k: v for k, v in asdict(msg).items() if k not in ("raw", "acks", "rev")}


__all__ = ["FINAL", "LoggedMessage", "MessageLog", "VersionConflict", "summary"]
