"""The audit trail in the store: AuditEvents appended to one hash chain per store.

Events are ordinary `AuditEvent` resources (version 1, never changed), so they are searched,
indexed, copied and backed up like every other resource. Their ids are their chain
positions (`ae-000000000042` is seq 42), and that is what makes the chain safe with several
writers: an event is stored with `expected_version=0` under the id of the next position,
inside the unit of work of the write it records (or the read batch's own unit). Two units
that both want position n+1 cannot both commit: SQLite runs one writer at a time (and the
unit looks the head up under its BEGIN IMMEDIATE), MongoDB refuses the second insert of the
same `_id` (the loser's unit replays and fails its check). Either way nothing
half-chained is left: the losing unit fails with VersionConflict, and the recorder runs
the units it opened itself again. The head is found from committed data (from a
per-process hint, galloping over the ids); in a caller's unit it is also confirmed inside
the unit (`confirm`), since that unit cannot simply be run again.

Retention removes a prefix of the chain; before it does, it records the last purged
event's (seq, hash) as the checkpoint (a store Document), which is where verification and
head discovery start from.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from fhirpm.audit import chain
from fhirpm.audit.chain import Anchor
from fhirpm.audit.index import AuditIndexer
from fhirpm.fhir import jsonio
from fhirpm.search.extract import Indexer
from fhirpm.storage.port import ResourceStore, ResourceVersion, UnitOfWork

TYPE = "AuditEvent"
DOCS = "audit"  # store Documents: the retention checkpoint
CHECKPOINT = "checkpoint"
_PREFIX = "ae-"


def instant() -> str:
    """Now as a fixed-width FHIR instant (the repository's format; strftime costs more)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def event_id(seq: int) -> str:
    return f"{_PREFIX}{seq:012d}"


def seq_of(id: str) -> int | None:
    digits = id[len(_PREFIX):]
    return int(digits) if id.startswith(_PREFIX) and digits.isdigit() else None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where the stored chain starts: the last purged event (the genesis when none)."""

    anchor: Anchor
    purged_before: str | None = None  # the `recorded` cut-off of the last purge


class Trail:
    """Appends sealed AuditEvents to the store's chain and reads the chain back."""

    def __init__(self, store: ResourceStore, indexer: Indexer, *,
                 key: bytes | None = None, now: Any = None) -> None:
        self.store = store
        self.indexer = indexer
        self._index = AuditIndexer(indexer)
        self.key = key
        self._hint: Anchor | None = None  # a committed event (or the checkpoint): a lower bound
        # the head each live unit has written up to: later events of the same unit follow it
        # without a look-up (the unit holds the chain's next positions until it ends)
        self._units: weakref.WeakKeyDictionary[Any, Anchor] = weakref.WeakKeyDictionary()
        self._now = now or instant

    # -- writing ------------------------------------------------------------------------

    async def append(self, unit: UnitOfWork, events: Sequence[dict[str, Any]], *,
                     confirm: bool = True) -> list[ResourceVersion]:
        """Seal `events` after the chain's head and put them into `unit` (they commit or
        roll back with it). Returns the stored versions.

        `confirm=False` skips looking the head up inside the unit (a trip to the writer):
        if another node took the position meanwhile, the unit then fails with
        VersionConflict (the put or the commit) and the caller must run it again, which
        the recorder does for the units it opens itself."""
        if not events:
            return []
        head = self._units.get(unit)
        if head is None:
            head = await self._head_in(unit) if confirm else await self.head()
        stored: list[ResourceVersion] = []
        for event in events:
            sealed = chain.seal(event, head, self.key)
            head = Anchor(head.seq + 1, chain.link_of(sealed).hash)  # type: ignore[union-attr]
            version, body = self._version(head.seq, sealed)
            await unit.put(version, self._index.extract(body), expected_version=0)
            stored.append(version)
        with contextlib.suppress(TypeError):  # not weakly referable: look up every time
            self._units[unit] = head
        return stored

    def committed(self, unit: UnitOfWork) -> None:
        """`unit` committed: its last event is a safe place to start the next look-up."""
        head = self._units.pop(unit, None)
        if head is not None and (self._hint is None or head.seq > self._hint.seq):
            self._hint = head

    def _version(self, seq: int, sealed: dict[str, Any]
                 ) -> tuple[ResourceVersion, dict[str, Any]]:
        stamp = self._now()
        body = {"resourceType": TYPE, "id": event_id(seq),
                "meta": {"versionId": "1", "lastUpdated": stamp},
                **{k: v for k, v in sealed.items() if k not in ("resourceType", "id", "meta")}}
        return ResourceVersion(TYPE, event_id(seq), 1, stamp, "POST", jsonio.dumps(body)), body

    async def _head_in(self, unit: UnitOfWork) -> Anchor:
        """The chain's head as `unit` sees it: found from committed data (cheap, outside the
        unit), then confirmed inside the unit (the next position is still free)."""
        head = await self.head()
        while True:
            found = await unit.current(TYPE, event_id(head.seq + 1))
            if found is None:
                return head
            head = _anchor(found, head.seq + 1)

    # -- reading ------------------------------------------------------------------------

    async def checkpoint(self) -> Checkpoint:
        doc = await self.store.doc_get(DOCS, CHECKPOINT)
        if doc is None:
            return Checkpoint(Anchor())
        body = orjson.loads(doc.body)
        return Checkpoint(Anchor(body["seq"], body["hash"]), body.get("purged_before"))

    async def head(self) -> Anchor:
        """The last committed event (the checkpoint when the chain is empty). Galloping
        search over the ids: O(log n) point reads from the last known position."""
        start = self._hint
        if start is not None and await self.store.read(TYPE, event_id(start.seq)) is None:
            start = None  # purged meanwhile (by another process): start from the checkpoint
        if start is None:
            start = (await self.checkpoint()).anchor
        low = start  # known to exist (or to be the checkpoint / genesis)
        step = 1
        high: int | None = None
        while high is None:
            found = await self.store.read(TYPE, event_id(low.seq + step))
            if found is None:
                high = low.seq + step
            else:
                low = _anchor(found, low.seq + step)
                step *= 2
        while high - low.seq > 1:  # low exists, high does not
            middle = (low.seq + high) // 2
            found = await self.store.read(TYPE, event_id(middle))
            if found is None:
                high = middle
            else:
                low = _anchor(found, middle)
        if self._hint is None or low.seq > self._hint.seq:
            self._hint = low
        return low

    async def events(self, after: int = 0, upto: int | None = None
                     ) -> AsyncIterator[tuple[int, dict[str, Any] | None]]:
        """(seq, event) in chain order from `after + 1` to the head (or `upto`); a missing
        position yields None (verification reports it)."""
        head = await self.head() if upto is None else Anchor(upto, "")
        for seq in range(after + 1, head.seq + 1):
            found = await self.store.read(TYPE, event_id(seq))
            yield seq, (jsonio.loads(found.body) if found is not None and not found.deleted
                        else None)


def _anchor(version: ResourceVersion, seq: int) -> Anchor:
    link = chain.link_of(jsonio.loads(version.body)) if not version.deleted else None
    # an unreadable seal still occupies its position; verification names it
    return Anchor(seq, link.hash if link is not None and link.seq == seq else "")
