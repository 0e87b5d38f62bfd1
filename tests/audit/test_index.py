"""The AuditEvent fast path indexes exactly what the general (FHIRPath) extractor does."""

from __future__ import annotations

from typing import Any

import pytest

from fhirpm.audit import chain, record
from fhirpm.audit import events as ev
from fhirpm.audit.index import AuditIndexer
from fhirpm.search.extract import RegistryIndexer
from fhirpm.search.registry import Registry
from fhirpm.storage.port import AuditEntry

SERVER = ev.Server("https://ehr.example.org/fhir", site="Main St")
WHO = ev.Who("chart", "drlee", "Practitioner/7", "198.51.100.4", "req-9")
WHEN = "2025-03-01T10:00:00.123456Z"


def every_shape() -> list[dict[str, Any]]:
    ok, bad = ev.Outcome(200), ev.Outcome(404, "Patient/x is not known")
    rest = [ev.rest_events(ev.Access(kind, ("Observation/5/_history/2",), ("p1", "p2"),
                                     "Observation?code=x", "$op" if kind == "operation"
                                     else None), WHO, SERVER, outcome, WHEN)
            for kind in sorted(ev.INTERACTIONS) for outcome in (ok, bad)]
    patient_user = ev.Who("portal", "pat", "Patient/p1", None, None)
    return [e for events in rest for e in events] + [
        *ev.rest_events(ev.Access("read", ("Patient/p1",), ("p1",)), patient_user, SERVER,
                        ok, WHEN),
        *ev.rest_events(ev.Access("search-system"), ev.Who(), SERVER, ok, WHEN),
        ev.login_event("drlee", WHO, SERVER, bad, WHEN),
        ev.token_event("issue", WHO, SERVER, ok, WHEN, request={"code": "c"}, token_id="j",
                       patient="p1"),
        ev.token_event("revoke", ev.Who(client_id="svc"), SERVER, ok, WHEN),
        ev.consent_event(WHO, SERVER, ok, WHEN, granted=True, scopes=("patient/*.rs",),
                         patient="p1"),
        ev.message_event("EHR^CLINIC", ev.Who(address="192.0.2.1"), SERVER, ok, WHEN,
                         message_type="ADT^A04", control_id="C1",
                         resources=("Patient/p1",), patient="p1"),
        ev.trail_event("purge", WHO, SERVER, ok, WHEN, description="purged 3"),
    ]


@pytest.fixture(scope="module")
def indexer() -> RegistryIndexer:
    return RegistryIndexer(Registry.load_default(), local_base=SERVER.base_url)


@pytest.fixture(scope="module")
def fast(indexer: RegistryIndexer) -> AuditIndexer:
    return AuditIndexer(indexer)  # one for all cases: its memo must not leak between events


@pytest.mark.parametrize("n", range(len(every_shape())))
def test_same_entries_as_the_fhirpath_extractor(indexer: RegistryIndexer, fast: AuditIndexer,
                                               n: int) -> None:
    # as served: id, meta and the seal extension added to the stored event
    body = record.render(AuditEntry(42, WHEN, (), chain.canonical(every_shape()[n]),
                                    "ab" * 32, "cd" * 32))
    expected = indexer.extract("AuditEvent", body)
    assert fast.extract(body) == expected
    assert {e.param for e in expected} >= {"_lastUpdated", "date", "action", "type",
                                           "subtype", "outcome"}
