"""The audit trail in the store: records appended to the store's audit log, one hash chain
per store.

The log is part of the storage port (`audit_append` on a unit of work, `audit_*` on the
store), outside the resource tables: an append is one narrow row plus a lookup row per
reference, not a resource version with ~22 search index rows. Positions are assigned and
records sealed by the store inside the committing transaction, after the head as that
transaction sees it, so several processes (API nodes, the HL7 listener, the CLI) append to
one chain without coordinating: on SQLite the writer holds the database's write lock; on
MongoDB two appenders conflict on the head document and one is replayed after the other.

With a journal (`fhirpm.audit.journal`, the server's default on SQLite), requests' records
are made durable there first and sealed into the chain moments later; every read of the
trail through this class (and the API's, `AuditView`) settles the journal first, so it
sees every record this process made.

Retention removes a prefix of the chain; before it does, it records the last purged
record's (seq, hash) as the checkpoint (a store Document), which is where verification
starts from. The store keeps the head (seq and hash of the newest record ever appended)
apart from the records, so the chain goes on even after every record was purged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from fhirpm.audit import chain, record
from fhirpm.audit.chain import Anchor
from fhirpm.audit.journal import Journal
from fhirpm.storage.port import (
    AuditDraft,
    AuditEntry,
    AuditSpan,
    ResourceStore,
    Sealer,
    UnitOfWork,
)

TYPE = record.TYPE
DOCS = "audit"  # store Documents: the retention checkpoint
CHECKPOINT = "checkpoint"
_CHUNK = 500
event_id = record.event_id
seq_of = record.seq_of


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where the stored chain starts: the last purged record (the genesis when none)."""

    anchor: Anchor
    purged_before: str | None = None  # the `recorded` cut-off of the last purge


class Trail:
    """Appends records to the store's chain and reads the chain back."""

    def __init__(self, store: ResourceStore, *, key: bytes | None = None) -> None:
        self.store = store
        self.key = key
        # (payload, seq, previous) -> hash, called once per record: without a key the
        # chain's digest itself, one call fewer
        self.seal: Sealer = chain.digest if key is None else partial(chain.digest, key=key)
        self.journal: Journal | None = None  # set by the wiring: see the module doc

    @property
    def open_journal(self) -> Journal | None:
        """The journal when it takes records (open), else None: commit them to the store."""
        journal = self.journal
        return journal if journal is not None and journal.ready else None

    async def settle(self) -> None:
        """Seal what the journal holds into the chain (reads of the trail start here)."""
        journal = self.open_journal
        if journal is not None:
            await journal.settle()

    async def commit(self, drafts: Sequence[AuditDraft]) -> None:
        """Store `drafts` now, in a transaction of their own."""
        await self.store.audit_commit(drafts, self.seal)

    async def append(self, unit: UnitOfWork, drafts: Sequence[AuditDraft]) -> None:
        """Put `drafts` into `unit`: they are sealed and stored when it commits, or not
        at all."""
        await unit.audit_append(drafts, self.seal)

    # -- reading ------------------------------------------------------------------------

    async def checkpoint(self) -> Checkpoint:
        await self.settle()
        doc = await self.store.doc_get(DOCS, CHECKPOINT)
        if doc is None:
            return Checkpoint(Anchor())
        body = orjson.loads(doc.body)
        return Checkpoint(Anchor(body["seq"], body["hash"]), body.get("purged_before"))

    async def head(self) -> Anchor:
        """The newest record (the checkpoint when the log is empty)."""
        await self.settle()
        newest = await self.store.audit_head()
        if newest is not None:
            return Anchor(newest.seq, newest.hash)
        return (await self.checkpoint()).anchor

    async def entries(self, after: int = 0, *, since: str | None = None,
                      until: str | None = None) -> AsyncIterator[AuditEntry]:
        """Stored records in chain order from seq `after + 1` (gaps are not filled in:
        verification reports them)."""
        await self.settle()
        while True:
            batch = await self.store.audit_list(AuditSpan(after=after, since=since,
                                                          until=until, limit=_CHUNK))
            for entry in batch:
                yield entry
            if len(batch) < _CHUNK:
                return
            after = batch[-1].seq

    async def events(self, after: int = 0) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """(seq, AuditEvent) in chain order (tests, tools)."""
        async for entry in self.entries(after):
            yield entry.seq, record.render(entry)
