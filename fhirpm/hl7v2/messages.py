"""The raw message log: every inbound message as received (bytes kept exactly), its status,
its acknowledgements and the resources it produced, in the store's Document API.

Key scheme (documents are listed by key prefix, so each listing is an index):
  hl7v2.messages  <received UTC, sortable>-<random>     the record (listing by date; sender,
                                                         type and status filter the listing)
  hl7v2.dedup     <MSH-3>|<MSH-4>|<MSH-10>               -> message id (expires after N days)
  hl7v2.index     patient|<Patient/id>|<id>              messages that wrote a patient
Each document write is a store round trip on the ingest path, so only the patient (known
after processing, and unbounded in time) has an index of its own.
Status: received -> processed | error | rejected. A record left at `received` was cut off
between receipt and acknowledgement (crash): its resend is processed, not answered from
the log. The record and its index entries are separate documents; the record is written
first, so an index entry never points at nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from fhirpm.hl7v2.parser import Header
from fhirpm.storage.port import ResourceStore, VersionConflict

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
        body = asdict(self)
        body.pop("rev")
        return orjson.dumps(body)

    @classmethod
    def from_doc(cls, body: bytes, rev: int) -> LoggedMessage:
        return cls(**orjson.loads(body), rev=rev)


def new_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%f") + "-" + os.urandom(3).hex()


class MessageLog:
    def __init__(self, store: ResourceStore, *, dedup_days: int = 30) -> None:
        self.store = store
        self.dedup_seconds = dedup_days * 86400

    async def create(self, raw: bytes, header: Header | None, peer: str = "") -> LoggedMessage:
        """Store a newly received message (status `received`) and claim its dedup key.

        Raises VersionConflict when another copy claimed the key first (a concurrent resend).
        """
        now = datetime.now(UTC)
        msg = LoggedMessage(id=new_id(now), received=now.isoformat(timespec="milliseconds"),
                            raw=raw.decode("latin-1"), peer=peer)
        if header is not None:
            msg.sender, msg.facility = header.sending_application, header.sending_facility
            msg.control_id = header.control_id
            msg.type = f"{header.message_code}^{header.event}"
        msg.rev = await self.store.doc_put(MESSAGES, msg.id, msg.to_json(), expected_rev=0)
        key = msg.dedup_key
        if key is not None:
            try:
                await self.store.doc_put(DEDUP, key, msg.id.encode(), expected_rev=0,
                                         expires_at=int(time.time()) + self.dedup_seconds)
            except VersionConflict:  # another copy claimed it: this record is nobody's
                await self.store.doc_delete(MESSAGES, msg.id)
                raise
        return msg

    async def duplicate_of(self, header: Header) -> LoggedMessage | None:
        if not header.control_id:
            return None
        doc = await self.store.doc_get(
            DEDUP, f"{header.sending_application}|{header.sending_facility}|{header.control_id}")
        return await self.get(doc.body.decode()) if doc else None

    async def get(self, id: str) -> LoggedMessage | None:
        doc = await self.store.doc_get(MESSAGES, id)
        return LoggedMessage.from_doc(doc.body, doc.rev) if doc else None

    async def save(self, msg: LoggedMessage) -> None:
        """Write a status change (compare-and-swap on the record's rev)."""
        msg.rev = await self.store.doc_put(MESSAGES, msg.id, msg.to_json(),
                                           expected_rev=msg.rev)
        if msg.patient:
            await self.store.doc_put(INDEX, f"patient|{msg.patient}|{msg.id}", b"")

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
        found = [m for m in found if (not sender or m.sender == sender)
                 and (not type or m.type == type) and (not status or m.status == status)]
        return found[-limit:] if limit else found


def summary(msg: LoggedMessage) -> dict[str, Any]:
    """The record without its raw text, for listings."""
    return {k: v for k, v in asdict(msg).items() if k not in ("raw", "acks", "rev")}


__all__ = ["FINAL", "LoggedMessage", "MessageLog", "VersionConflict", "summary"]
