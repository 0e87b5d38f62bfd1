"""The hash chain that makes the audit trail tamper-evident.

Each record of the trail is sealed at its position `seq` (1, 2, 3, ... per store) with the
previous record's hash and its own hash. The hash is SHA-256 (or HMAC-SHA-256 with a
secret key, so that someone who can write the database cannot simply recompute the
chain) over a domain tag, seq, the previous hash and the record's payload: the bytes the
store keeps (`fhirpm.audit.record`: the facts of a REST interaction as a compact JSON
array, or a whole AuditEvent in canonical form). Changing, removing, inserting or
reordering any record breaks verification from that point on.

A chain may start after an `Anchor` (the last purged record's seq and hash, kept by the
retention job) instead of the genesis. Truncating the newest records cannot be seen from
the records alone: compare the newest seq with one recorded elsewhere (docs/operations.md).
Pure: no store; the store assigns seq inside its transaction and calls `digest` there.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fhirpm.fhir import jsonio
from fhirpm.storage.port import AUDIT_GENESIS

CHAIN_URL = "urn:fhirpm:audit-chain"
GENESIS = AUDIT_GENESIS  # where the store starts a chain
_TAG = b"fhirpm-audit-chain-v1\n"


@dataclass(frozen=True, slots=True)
class Anchor:
    """A point in the chain: a record's seq and hash (the genesis is seq 0)."""

    seq: int = 0
    hash: str = GENESIS


class Link(Protocol):
    """A sealed record as stored (`storage.port.AuditEntry` is one)."""

    @property
    def seq(self) -> int: ...

    @property
    def previous(self) -> str: ...

    @property
    def hash(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Sealed:
    """A link made here (tests, tools): what a store would keep."""

    seq: int
    previous: str
    hash: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    checked: int  # records verified before the first problem
    last: Anchor  # the last record that verified (where a later check can continue)
    problem: str | None = None
    at_seq: int | None = None  # the seq of the first bad record (None: the chain's end)


def canonical(event: dict[str, Any]) -> bytes:
    """A whole AuditEvent as a payload: compact JSON with sorted keys, without id and meta
    (assigned when it is served) and without the chain extension (the seal itself)."""
    body = {k: v for k, v in event.items() if k not in ("id", "meta")}
    others = [e for e in body.get("extension", ()) if e.get("url") != CHAIN_URL]
    if others:
        body["extension"] = others
    else:
        body.pop("extension", None)
    return jsonio.dumps(body, sort_keys=True)


def digest(payload: bytes, seq: int, previous: str, key: bytes | None = None) -> str:
    message = b"".join((_TAG, str(seq).encode(), b"\n", previous.encode(), b"\n", payload))
    if key is not None:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def seal_all(payloads: Iterable[bytes], after: Anchor = Anchor(),
             key: bytes | None = None) -> tuple[list[Sealed], Anchor]:
    """Seal payloads in order after `after`; returns the links and the last one's anchor."""
    out = []
    for payload in payloads:
        seq = after.seq + 1
        link = Sealed(seq, after.hash, digest(payload, seq, after.hash, key), payload)
        out.append(link)
        after = Anchor(seq, link.hash)
    return out, after


def verify(links: Iterable[Link], after: Anchor = Anchor(),
           key: bytes | None = None) -> Verdict:
    """Check that links (in seq order) continue the chain from `after`, each intact."""
    checked = 0
    last = after
    for link in links:
        if link.seq > last.seq + 1:  # reported where the first missing record belongs
            return Verdict(False, checked, last, f"records missing: expected seq "
                           f"{last.seq + 1}, found {link.seq}", last.seq + 1)
        if link.seq != last.seq + 1:
            return Verdict(False, checked, last, f"records repeated or out of order: "
                           f"expected seq {last.seq + 1}, found {link.seq}", link.seq)
        if not hmac.compare_digest(link.previous, last.hash):
            return Verdict(False, checked, last, "the link to the previous record is broken",
                           link.seq)
        if not hmac.compare_digest(link.hash, digest(link.payload, link.seq, link.previous,
                                                     key)):
            return Verdict(False, checked, last, "the record was changed after it was sealed",
                           link.seq)
        checked += 1
        last = Anchor(link.seq, link.hash)
    return Verdict(True, checked, last)


def link_of(event: dict[str, Any]) -> Anchor | None:
    """The (seq, hash) a served AuditEvent's seal extension states, or None."""
    seals = [e for e in event.get("extension", ()) if isinstance(e, dict)
             and e.get("url") == CHAIN_URL]
    if len(seals) != 1:
        return None
    values = {e.get("url"): e.get("valueString") for e in seals[0].get("extension", ())
              if isinstance(e, dict)}
    seq, hash_ = values.get("seq"), values.get("hash")
    if not (isinstance(seq, str) and seq.isdigit() and isinstance(hash_, str)):
        return None
    return Anchor(int(seq), hash_)
