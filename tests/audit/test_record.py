"""The stored facts of a read: `record.read` (the recorder's short way for reads and
vreads) makes exactly the drafts the general `record.rest` makes, and both render to the
BALP event of `events.rest_events`."""

from __future__ import annotations

import pytest

from fhirpm.audit import events as ev
from fhirpm.audit import record as rec
from fhirpm.audit.recorder import _interaction, _read_kind
from fhirpm.repository.interactions import path_shape as _shape
from fhirpm.storage.port import AuditEntry

SERVER = ev.Server("https://fhir.example.org/fhir", site="Main St practice")
STAFF = ev.Who("portal", "alice", "Practitioner/7", "10.0.0.9", "req-1")
BACKEND = ev.Who("sync-service", None, None, None, None)
WHEN = "2026-11-28T21:00:00.000001Z"


@pytest.mark.parametrize("who", [STAFF, BACKEND])
@pytest.mark.parametrize(("interaction", "type_", "id_", "patients", "query"), [
    ("read", "Patient", "p1", ["p1"], "Patient/p1"),
    ("vread", "Observation", "o1", ["p1", "p2", "p1"], "Observation/o1/_history/3"),
    ("read", "Practitioner", "7", [], "Practitioner/7?_format=json"),
])
def test_a_read_is_recorded_as_the_general_builder_records_it(
        who: ev.Who, interaction: str, type_: str, id_: str, patients: list[str],
        query: str) -> None:
    version = 3
    short = rec.read(interaction, type_, id_, version, patients, query, 200, who, SERVER,
                     WHEN)
    access = ev.Access(interaction, (f"{type_}/{id_}/_history/{version}",),
                       tuple(patients), query)
    general = rec.rest(access, who, SERVER, ev.Outcome(200), WHEN)
    assert short == general
    assert len(short) == max(1, len(set(patients)))  # one event per patient (BALP)
    for n, draft in enumerate(short):
        event = rec.render(AuditEntry(n + 1, WHEN, draft.refs, draft.payload, "p", "h"))
        expected = ev.rest_events(ev.Access(interaction, access.resources,
                                            (list(dict.fromkeys(patients))[n],)
                                            if patients else (), query),
                                  who, SERVER, ev.Outcome(200), WHEN)[0]
        assert {k: v for k, v in event.items() if k not in ("id", "meta", "extension")} \
            == {k: v for k, v in expected.items() if k not in ("id", "meta", "extension")}
        assert f"{type_}/{id_}" in draft.refs
    # what a journal keeps of them: their payloads, from which the drafts come back whole
    payloads = rec.read_payloads(interaction, type_, id_, version, patients, query, 200,
                                 who, SERVER, WHEN)
    assert payloads == [d.payload for d in short]
    assert [rec.draft_of(p) for p in payloads] == short


def test_a_whole_event_comes_back_from_its_payload() -> None:
    """Logins, tokens, HL7 v2 messages: stored whole, read back with their references."""
    event = ev.trail_event("purge", STAFF, SERVER, ev.Outcome(200), WHEN, description="x")
    draft = rec.whole(event)
    assert rec.draft_of(draft.payload) == draft


def test_the_recorders_read_shortcut_agrees_with_its_general_routing() -> None:
    """Every path of up to four segments drawn from the shapes that matter (other paths,
    refused anyway, take the general way)."""
    segments = ["Patient", "p1", "_history", "_search", "metadata", "$everything", "2", ""]
    paths = [[a] for a in segments]
    for _ in range(3):
        paths += [[*p, s] for p in paths if len(p) < 4 for s in segments]
    for parts in map(list, {tuple(p) for p in paths}):
        given = [p for p in parts if p]
        general, shortcut = _interaction("GET", given), _read_kind(parts)
        if shortcut is not None:  # never a different interaction
            assert shortcut == general and given == parts, parts
        if _shape(given) in ("T/I", "T/I/_history/V") and given == parts:
            assert shortcut == general, parts  # never misses a read or vread
