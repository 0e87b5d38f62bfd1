"""Looking after the stored trail: verification, retention purge and NDJSON export.

- `verify` walks the chain from the retention checkpoint to the head and reports the first
  broken link (a changed, missing, inserted or reordered event).
- `purge` removes the events recorded before the retention cut-off, oldest first and only
  as a prefix of the chain, after checking that prefix; before removing anything it moves
  the checkpoint (a store Document holding the last purged event's seq and hash, sealed
  like the events) past it, so what remains verifies from there. Each purge is itself
  recorded as an AuditEvent.
- `export` writes the events recorded in [since, until) as NDJSON, in chain order, for a
  SIEM; each line is the stored AuditEvent (seal included: the SIEM can check the chain).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from fhirpm.audit import chain, record
from fhirpm.audit.chain import Anchor
from fhirpm.audit.trail import CHECKPOINT, DOCS, Checkpoint, Trail
from fhirpm.fhir import jsonio
from fhirpm.storage.port import AuditEntry, AuditSpan

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Report:
    ok: bool
    checked: int  # events that verified
    start: Anchor  # where verification started (the checkpoint)
    head: Anchor  # the last event that verified
    problem: str | None = None
    at_seq: int | None = None

    def lines(self) -> list[str]:
        start = f"from seq {self.start.seq + 1}" if self.start.seq else "from the first event"
        if self.ok:
            return [f"audit chain OK: {self.checked} events verified {start}, "
                    f"head seq {self.head.seq}"]
        return [f"audit chain BROKEN at seq {self.at_seq}: {self.problem}",
                f"  {self.checked} events verified {start} before it (last good seq "
                f"{self.head.seq})"]


# -- checkpoint ---------------------------------------------------------------------------


def checkpoint_seal(anchor: Anchor, purged_before: str | None, key: bytes | None) -> str:
    message = f"fhirpm-audit-checkpoint-v1\n{anchor.seq}\n{anchor.hash}\n{purged_before}"
    if key is not None:
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
    return hashlib.sha256(message.encode()).hexdigest()


async def _checkpoint_ok(trail: Trail) -> tuple[Checkpoint, str | None]:
    doc = await trail.store.doc_get(DOCS, CHECKPOINT)
    if doc is None:
        return Checkpoint(Anchor()), None
    body = orjson.loads(doc.body)
    cp = Checkpoint(Anchor(body["seq"], body["hash"]), body.get("purged_before"))
    expected = checkpoint_seal(cp.anchor, cp.purged_before, trail.key)
    if not hmac.compare_digest(str(body.get("seal", "")), expected):
        return cp, "the retention checkpoint was changed (its seal does not match)"
    return cp, None


# -- verify -------------------------------------------------------------------------------


async def verify(trail: Trail) -> Report:
    cp, problem = await _checkpoint_ok(trail)
    if problem is not None:
        return Report(False, 0, cp.anchor, cp.anchor, problem, cp.anchor.seq)
    last = cp.anchor
    checked = 0
    chunk: list[AuditEntry] = []
    async for entry in trail.entries(after=cp.anchor.seq):
        chunk.append(entry)
        if len(chunk) >= _CHUNK:
            verdict = chain.verify(chunk, last, trail.key)
            if not verdict.ok:
                return Report(False, checked + verdict.checked, cp.anchor, verdict.last,
                              verdict.problem, verdict.at_seq)
            checked += verdict.checked
            last = verdict.last
            chunk = []
    verdict = chain.verify(chunk, last, trail.key)
    return Report(verdict.ok, checked + verdict.checked, cp.anchor, verdict.last,
                  verdict.problem, verdict.at_seq)


# -- retention ----------------------------------------------------------------------------


def cutoff(retention_days: int, now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Purged:
    removed: int
    checkpoint: Anchor
    refused: str | None = None  # the prefix did not verify: nothing was removed


async def purge(trail: Trail, before: str) -> Purged:
    """Remove the chain's prefix of records recorded before `before` (a FHIR instant)."""
    cp, problem = await _checkpoint_ok(trail)
    if problem is not None:
        return Purged(0, cp.anchor, problem)
    removed = 0
    last = cp.anchor
    while True:
        batch = [e for e in await trail.store.audit_list(AuditSpan(after=last.seq,
                                                                   limit=_CHUNK))
                 if e.recorded < before]
        batch = batch[:_prefix_length(batch, last.seq)]
        if not batch:
            break
        verdict = chain.verify(batch, last, trail.key)
        if not verdict.ok:  # never purge what does not verify: it is the evidence
            return Purged(removed, last, f"seq {verdict.at_seq}: {verdict.problem}")
        await _move_checkpoint(trail, verdict.last, before)
        await trail.store.audit_purge(verdict.last.seq)
        removed += len(batch)
        last = verdict.last
    return Purged(removed, last)


def _prefix_length(batch: list[AuditEntry], after: int) -> int:
    """How many of `batch` continue the chain's prefix without a gap (recorded times
    can interleave across nodes: the purge stops at the first record it must keep)."""
    for n, entry in enumerate(batch):
        if entry.seq != after + n + 1:
            return n
    return len(batch)


async def _move_checkpoint(trail: Trail, anchor: Anchor, before: str) -> None:
    doc = await trail.store.doc_get(DOCS, CHECKPOINT)
    body = orjson.dumps({"seq": anchor.seq, "hash": anchor.hash, "purged_before": before,
                         "seal": checkpoint_seal(anchor, before, trail.key)})
    # compare-and-swap: two purges racing cannot move it backwards over each other
    await trail.store.doc_put(DOCS, CHECKPOINT, body,
                              expected_rev=doc.rev if doc is not None else 0)


# -- export -------------------------------------------------------------------------------


async def export(trail: Trail, since: str | None = None,
                 until: str | None = None) -> AsyncIterator[bytes]:
    """NDJSON lines (with the newline) of the events recorded in [since, until), in chain
    order; each carries its seal and the sealed payload, so a SIEM can check the chain."""
    cp = await trail.checkpoint()
    async for entry in trail.entries(after=cp.anchor.seq, since=since, until=until):
        if entry.recorded == until:  # the span is inclusive, the export's end is not
            continue
        yield jsonio.dumps(record.render(entry, with_payload=True)) + b"\n"
