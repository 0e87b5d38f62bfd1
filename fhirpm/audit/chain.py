"""The hash chain that makes the audit trail tamper-evident.

Each AuditEvent is sealed with its position `seq` (1, 2, 3, ... per store), the previous
event's hash and its own hash, in one extension (`CHAIN_URL`). The hash is SHA-256 (or
HMAC-SHA-256 with a secret key, so that someone who can write the database cannot simply
recompute the chain) over a domain tag, seq, the previous hash and the event's canonical
form: compact JSON with sorted keys, without `id`, `meta` (both assigned by the store)
and the chain extension itself. Changing, removing, inserting or reordering any sealed
event breaks verification from that point on.

A chain may start after an `Anchor` (the last purged event's seq and hash, kept by the
retention job) instead of the genesis. Truncating the newest events cannot be seen from
the events alone: compare the newest seq with one recorded elsewhere (docs/operations.md).
Pure: no store; the caller assigns seq inside the store's transaction.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhirpm.fhir import jsonio

CHAIN_URL = "urn:fhirpm:audit-chain"
GENESIS = "0" * 64
_TAG = b"fhirpm-audit-chain-v1\n"


@dataclass(frozen=True, slots=True)
class Anchor:
    """A point in the chain: an event's seq and hash (the genesis is seq 0)."""

    seq: int = 0
    hash: str = GENESIS


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    checked: int  # events verified before the first problem
    last: Anchor  # the last event that verified (where a later check can continue)
    problem: str | None = None
    at_seq: int | None = None  # the seq of the first bad event (None: the chain's end)


def canonical(event: dict[str, Any]) -> bytes:
    """The sealed content of an event: everything but id, meta and the chain extension."""
    body = {k: v for k, v in event.items() if k not in ("id", "meta")}
    others = [e for e in body.get("extension", ()) if e.get("url") != CHAIN_URL]
    if others:
        body["extension"] = others
    else:
        body.pop("extension", None)
    return jsonio.dumps(body, sort_keys=True)


def digest(event: dict[str, Any], seq: int, previous: str, key: bytes | None = None) -> str:
    message = b"".join((_TAG, str(seq).encode(), b"\n", previous.encode(), b"\n",
                        canonical(event)))
    if key is not None:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def seal(event: dict[str, Any], after: Anchor, key: bytes | None = None) -> dict[str, Any]:
    """A copy of `event` sealed as the event following `after`."""
    seq = after.seq + 1
    sealed = dict(event)  # shallow: nothing nested is changed (a deep copy cost ~0.5 ms)
    others = [e for e in sealed.get("extension", ()) if e.get("url") != CHAIN_URL]
    link = {"url": CHAIN_URL, "extension": [
        {"url": "seq", "valueString": str(seq)},
        {"url": "previous", "valueString": after.hash},
        {"url": "hash", "valueString": digest(event, seq, after.hash, key)}]}
    sealed["extension"] = [*others, link]
    return sealed


def seal_all(events: Iterable[dict[str, Any]], after: Anchor = Anchor(),
             key: bytes | None = None) -> tuple[list[dict[str, Any]], Anchor]:
    """Seal events in order; returns them and the anchor of the last one."""
    out = []
    for event in events:
        sealed = seal(event, after, key)
        out.append(sealed)
        after = link_of(sealed) or after
    return out, after


def link_of(event: dict[str, Any]) -> Anchor | None:
    """The (seq, hash) an event was sealed with, or None if it carries no valid seal."""
    fields = _seal_fields(event)
    if fields is None:
        return None
    return Anchor(fields[0], fields[2])


def _seal_fields(event: dict[str, Any]) -> tuple[int, str, str] | None:
    links = [e for e in event.get("extension", ()) if isinstance(e, dict)
             and e.get("url") == CHAIN_URL]
    if len(links) != 1:
        return None
    values = {e.get("url"): e.get("valueString") for e in links[0].get("extension", ())
              if isinstance(e, dict)}
    seq, previous, hash_ = values.get("seq"), values.get("previous"), values.get("hash")
    if not (isinstance(seq, str) and seq.isdigit() and isinstance(previous, str)
            and isinstance(hash_, str)):
        return None
    return int(seq), previous, hash_


def verify(events: Iterable[dict[str, Any]], after: Anchor = Anchor(),
           key: bytes | None = None) -> Verdict:
    """Check events (in seq order) continue the chain from `after`, each intact."""
    checked = 0
    last = after
    for event in events:
        fields = _seal_fields(event)
        if fields is None:
            return Verdict(False, checked, last, "an event carries no chain seal",
                           last.seq + 1)
        seq, previous, hash_ = fields
        if seq != last.seq + 1:
            what = "missing" if seq > last.seq + 1 else "repeated or out of order"
            return Verdict(False, checked, last, f"events {what}: expected seq "
                           f"{last.seq + 1}, found {seq}", seq)
        if not hmac.compare_digest(previous, last.hash):
            return Verdict(False, checked, last, "the link to the previous event is broken",
                           seq)
        if not hmac.compare_digest(hash_, digest(event, seq, previous, key)):
            return Verdict(False, checked, last, "the event was changed after it was sealed",
                           seq)
        checked += 1
        last = Anchor(seq, hash_)
    return Verdict(True, checked, last)
