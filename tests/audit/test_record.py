"""The stored facts of a read: `record.read` (the recorder's short way for reads and
vreads) makes exactly the drafts the general `record.rest` makes, and both render to the
BALP event of `events.rest_events`."""

from __future__ import annotations

import pytest

from fhirpm.audit import events as ev
from fhirpm.audit import record as rec
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
