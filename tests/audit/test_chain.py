"""The audit hash chain: a sealed sequence verifies; any edit, deletion, insertion,
reordering or forged re-seal without the key is found, at the right seq."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhirpm.audit import chain
from fhirpm.audit.chain import GENESIS, Anchor
from fhirpm.audit.events import Access, Outcome, Server, Who, rest_events
from fhirpm.fhir import jsonio

SERVER = Server("https://ehr.example.org/fhir")


def events(n: int) -> list[dict[str, Any]]:
    who = Who(client_id="app", user="drlee", address="10.0.0.1")
    return [rest_events(Access("read", (f"Observation/{i}",), (f"p{i % 3}",)), who, SERVER,
                        Outcome(200), f"2025-03-01T10:00:{i:02d}.000Z")[0] for i in range(n)]


def test_a_sealed_chain_verifies_and_continues_from_an_anchor() -> None:
    sealed, last = chain.seal_all(events(5))
    verdict = chain.verify(sealed)
    assert verdict.ok and verdict.checked == 5 and verdict.last == last
    assert last.seq == 5 and len(last.hash) == 64 and last.hash != GENESIS
    more, newest = chain.seal_all(events(3), after=last)
    assert chain.verify(more, after=last).ok
    assert chain.verify(sealed + more).last == newest
    # a purge keeps the anchor of the last purged event, and the rest still verifies
    assert chain.verify(sealed[2:], after=chain.link_of(sealed[1])).ok
    assert not chain.verify(sealed[2:]).ok


def test_the_seal_survives_the_store_assigning_id_and_meta() -> None:
    sealed, _ = chain.seal_all(events(2))
    stored = [{**e, "id": f"ae-{n}", "meta": {"versionId": "1",
                                             "lastUpdated": "2025-03-01T10:01:00Z"}}
              for n, e in enumerate(sealed)]
    reread = [jsonio.loads(jsonio.dumps(e)) for e in stored]  # as served from the store
    assert chain.verify(reread).ok


def test_other_extensions_are_kept_and_sealed() -> None:
    event = events(1)[0]
    event["extension"] = [{"url": "urn:example:note", "valueString": "a"}]
    [sealed], _ = chain.seal_all([event])
    assert sealed["extension"][0] == {"url": "urn:example:note", "valueString": "a"}
    tampered = copy.deepcopy(sealed)
    tampered["extension"][0]["valueString"] = "b"
    assert chain.verify([sealed]).ok and not chain.verify([tampered]).ok


# tamper -> (seq where verification stops, what it says, events verified before)
CASES = {
    "edit": (4, "changed", 3),
    "delete": (5, "missing", 3),
    "insert": (4, "out of order", 4),  # a well-formed forgery shows at the next real event
    "swap": (4, "missing", 2),
    "unsealed": (4, "no chain seal", 3),
    "duplicate": (4, "out of order", 4),
}


@pytest.mark.parametrize("tamper", sorted(CASES))
def test_tampering_is_detected_where_it_happened(tamper: str) -> None:
    sealed, _ = chain.seal_all(events(6))
    bad = copy.deepcopy(sealed)
    if tamper == "edit":
        bad[3]["agent"][0]["who"]["identifier"]["value"] = "someone-else"
    elif tamper == "delete":
        del bad[3]
    elif tamper == "insert":
        forged, _ = chain.seal_all(events(1), after=chain.link_of(bad[2]))
        bad.insert(3, forged[0])
    elif tamper == "swap":
        bad[2], bad[3] = bad[3], bad[2]
    elif tamper == "unsealed":
        bad[3].pop("extension")
    else:
        bad.insert(4, copy.deepcopy(bad[3]))
    at_seq, why, checked = CASES[tamper]
    verdict = chain.verify(bad)
    assert not verdict.ok
    assert (verdict.at_seq, verdict.checked) == (at_seq, checked), verdict
    assert why in verdict.problem
    assert verdict.last == (chain.link_of(bad[checked - 1]) if checked else Anchor())


def test_with_a_key_a_rewritten_and_resealed_chain_is_detected() -> None:
    key = b"k" * 32
    sealed, _ = chain.seal_all(events(6), key=key)
    bad = copy.deepcopy(sealed)
    bad[3]["recorded"] = "2025-03-02T00:00:00.000Z"
    # the forger knows the algorithm but not the key
    resealed, _ = chain.seal_all(
        [{k: v for k, v in e.items() if k != "extension"} for e in bad[3:]],
        after=chain.link_of(bad[2]))
    bad[3:] = resealed
    assert chain.verify(sealed, key=key).ok
    verdict = chain.verify(bad, key=key)
    assert not verdict.ok and verdict.at_seq == 4 and "changed" in verdict.problem


def test_hash_depends_on_position_and_key() -> None:
    [event] = events(1)
    assert chain.digest(event, 1, GENESIS) != chain.digest(event, 2, GENESIS)
    assert chain.digest(event, 1, GENESIS) != chain.digest(event, 1, "f" * 64)
    assert chain.digest(event, 1, GENESIS) != chain.digest(event, 1, GENESIS, key=b"k")
    assert chain.digest(event, 1, GENESIS) == chain.digest(copy.deepcopy(event), 1, GENESIS)
    assert chain.verify([]).ok and chain.verify([]).last == Anchor()
