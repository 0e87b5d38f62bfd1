"""The audit hash chain: a sealed sequence verifies; any edit, deletion, insertion,
reordering or forged re-seal without the key is found, at the right seq."""

from __future__ import annotations

import dataclasses

import pytest

from fhirpm.audit import chain, record
from fhirpm.audit.chain import GENESIS, Anchor, Sealed
from fhirpm.audit.events import Access, Outcome, Server, Who
from fhirpm.storage.port import AuditEntry

SERVER = Server("https://ehr.example.org/fhir")


def payloads(n: int) -> list[bytes]:
    """The stored form of n reads (facts arrays, as the recorder makes them)."""
    who = Who(client_id="app", user="drlee", address="10.0.0.1")
    return [record.rest(Access("read", (f"Observation/{i}",), (f"p{i % 3}",)), who, SERVER,
                        Outcome(200), f"2025-03-01T10:00:{i:02d}.000000Z")[0].payload
            for i in range(n)]


def test_a_sealed_chain_verifies_and_continues_from_an_anchor() -> None:
    sealed, last = chain.seal_all(payloads(5))
    verdict = chain.verify(sealed)
    assert verdict.ok and verdict.checked == 5 and verdict.last == last
    assert last.seq == 5 and len(last.hash) == 64 and last.hash != GENESIS
    more, newest = chain.seal_all(payloads(3), after=last)
    assert chain.verify(more, after=last).ok
    assert chain.verify(sealed + more).last == newest
    # a purge keeps the anchor of the last purged record, and the rest still verifies
    assert chain.verify(sealed[2:], after=Anchor(2, sealed[1].hash)).ok
    assert not chain.verify(sealed[2:]).ok


def test_a_served_event_states_its_seal() -> None:
    [link], _ = chain.seal_all(payloads(1))
    event = record.render(AuditEntry(link.seq, "2025-03-01T10:00:00.000000Z", (),
                                     link.payload, link.previous, link.hash))
    assert event["id"] == record.event_id(1)
    assert chain.link_of(event) == Anchor(1, link.hash)
    assert chain.link_of({"resourceType": "AuditEvent"}) is None


def test_a_whole_event_is_sealed_in_canonical_form() -> None:
    event = record._event(payloads(1)[0])
    event["extension"] = [{"url": "urn:example:note", "valueString": "a"}]
    reordered = dict(reversed(list(event.items())))
    assert chain.canonical(event) == chain.canonical(reordered)  # key order is not sealed
    changed = {**event, "extension": [{"url": "urn:example:note", "valueString": "b"}]}
    assert chain.canonical(event) != chain.canonical(changed)  # other extensions are


# tamper -> (seq where verification stops, what it says, records verified before)
CASES = {
    "edit": (4, "changed", 3),
    "delete": (4, "missing", 3),
    "insert": (4, "out of order", 4),  # a well-formed forgery shows at the next real record
    "swap": (3, "missing", 2),
    "relink": (4, "previous record is broken", 3),
    "duplicate": (4, "out of order", 4),
}


@pytest.mark.parametrize("tamper", sorted(CASES))
def test_tampering_is_detected_where_it_happened(tamper: str) -> None:
    sealed, _ = chain.seal_all(payloads(6))
    bad: list[Sealed] = list(sealed)
    if tamper == "edit":
        bad[3] = dataclasses.replace(bad[3], payload=bad[3].payload.replace(b"drlee", b"eve"))
    elif tamper == "delete":
        del bad[3]
    elif tamper == "insert":
        forged, _ = chain.seal_all(payloads(1), after=Anchor(3, bad[2].hash))
        bad.insert(3, forged[0])
    elif tamper == "swap":
        bad[2], bad[3] = bad[3], bad[2]
    elif tamper == "relink":
        bad[3] = dataclasses.replace(bad[3], previous="f" * 64)
    else:
        bad.insert(4, bad[3])
    at_seq, why, checked = CASES[tamper]
    verdict = chain.verify(bad)
    assert not verdict.ok
    assert (verdict.at_seq, verdict.checked) == (at_seq, checked), verdict
    assert why in verdict.problem
    assert verdict.last == (Anchor(bad[checked - 1].seq, bad[checked - 1].hash) if checked
                            else Anchor())


def test_with_a_key_a_rewritten_and_resealed_chain_is_detected() -> None:
    key = b"k" * 32
    sealed, _ = chain.seal_all(payloads(6), key=key)
    rewritten = [s.payload for s in sealed[3:]]
    rewritten[0] = rewritten[0].replace(b"10:00:03", b"23:59:59")
    # the forger knows the algorithm but not the key
    resealed, _ = chain.seal_all(rewritten, after=Anchor(3, sealed[2].hash))
    bad = sealed[:3] + resealed
    assert chain.verify(sealed, key=key).ok
    verdict = chain.verify(bad, key=key)
    assert not verdict.ok and verdict.at_seq == 4 and "changed" in verdict.problem


def test_hash_depends_on_position_and_key() -> None:
    [payload] = payloads(1)
    assert chain.digest(payload, 1, GENESIS) != chain.digest(payload, 2, GENESIS)
    assert chain.digest(payload, 1, GENESIS) != chain.digest(payload, 1, "f" * 64)
    assert chain.digest(payload, 1, GENESIS) != chain.digest(payload, 1, GENESIS, key=b"k")
    assert chain.digest(payload, 1, GENESIS) == chain.digest(bytes(payload), 1, GENESIS)
    assert chain.verify([]).ok and chain.verify([]).last == Anchor()
