"""BALP-shaped AuditEvents: each interaction's exact shape, one event per patient, the
query kept in base64, secrets kept out, and every event valid R4."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from fhirpm.audit import events as ev
from fhirpm.audit.events import Access, Outcome, Server, Who
from fhirpm.auth.principal import Principal
from fhirpm.auth.scopes import ScopeSet
from fhirpm.fhir import jsonio
from fhirpm.fhir.validation import FhirkitValidator

SERVER = Server(base_url="https://ehr.example.org/fhir", site="Main St Practice")
DOCTOR = Who(client_id="chart-app", user="drlee", fhir_user="Practitioner/7",
             address="198.51.100.4", request_id="req-1")
WHEN = "2025-03-01T10:00:00.000Z"
OK = Outcome(200)


@pytest.fixture(scope="module")
def validator() -> FhirkitValidator:
    return FhirkitValidator()


def assert_valid(validator: FhirkitValidator, event: dict[str, Any]) -> None:
    errors = [i for i in validator.validate(event, jsonio.dumps(event))
              if i.severity == "error"]
    assert not errors, [i.diagnostics for i in errors]


def codes(event: dict[str, Any]) -> tuple[str, str, str]:
    return event["type"]["code"], event["subtype"][0]["code"], event["action"]


def agent_types(event: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(a["type"]["coding"][0]["code"], a["requestor"]) for a in event["agent"]]


def entity_roles(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [((e.get("role") or {}).get("code", ""), (e.get("what") or {}).get(
        "reference") or (e.get("what") or {}).get("identifier", {}).get("value", ""))
            for e in event.get("entity", ())]


def test_read_of_a_patients_observation(validator: FhirkitValidator) -> None:
    [event] = ev.rest_events(Access("read", ("Observation/5",), ("p1",)), DOCTOR, SERVER,
                             OK, WHEN)
    assert codes(event) == ("rest", "read", "R")
    assert event["subtype"][0]["system"] == "http://hl7.org/fhir/restful-interaction"
    assert event["recorded"] == WHEN and event["outcome"] == "0"
    # BALP Read: the client is the destination (data flows to it), the user the recipient
    assert agent_types(event) == [("110152", False), ("110153", False), ("IRCP", True)]
    client, server, user = event["agent"]
    assert client["who"]["identifier"]["value"] == "chart-app"
    assert client["network"] == {"address": "198.51.100.4", "type": "2"}
    assert server["who"]["identifier"]["value"] == SERVER.base_url
    assert user["who"]["reference"] == "Practitioner/7"
    assert user["who"]["identifier"]["value"] == "drlee"
    assert entity_roles(event) == [("", "req-1"), ("4", "Observation/5"), ("1", "Patient/p1")]
    assert event["source"]["site"] == "Main St Practice"
    assert event["source"]["type"][0]["code"] == "4"
    assert_valid(validator, event)


def test_a_search_touching_three_patients_is_three_events(validator: FhirkitValidator) -> None:
    query = "Observation?code=http://loinc.org|8867-4&_count=50"
    found = ev.rest_events(Access("search-type", patients=("a", "b", "a", "c"), query=query),
                           DOCTOR, SERVER, OK, WHEN)
    assert [entity_roles(e)[-1] for e in found] == [("1", "Patient/a"), ("1", "Patient/b"),
                                                    ("1", "Patient/c")]
    for event in found:
        assert codes(event) == ("rest", "search-type", "E")
        assert agent_types(event) == [("110153", False), ("110152", False), ("IRCP", True)]
        query_entity = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
        assert base64.b64decode(query_entity["query"]).decode() == query
        assert "what" not in query_entity
        assert_valid(validator, event)


def test_a_search_touching_no_patient_is_one_event_without_one() -> None:
    [event] = ev.rest_events(Access("search-system", query="?_type=Organization"), DOCTOR,
                             SERVER, OK, WHEN)
    assert not any(role == "1" for role, _ in entity_roles(event))


@pytest.mark.parametrize(("interaction", "action", "user_type"), [
    ("create", "C", "AUT"), ("update", "U", "AUT"), ("patch", "U", "AUT")])
def test_writes(validator: FhirkitValidator, interaction: str, action: str,
                user_type: str) -> None:
    [event] = ev.rest_events(Access(interaction, ("Condition/9/_history/2",), ("p1",)),
                             DOCTOR, SERVER, Outcome(201), WHEN)
    assert codes(event) == ("rest", interaction, action)
    assert agent_types(event) == [("110153", False), ("110152", False), (user_type, True)]
    assert entity_roles(event)[1:] == [("4", "Condition/9/_history/2"), ("1", "Patient/p1")]
    assert_valid(validator, event)


def test_delete_uses_balps_custodian_shape(validator: FhirkitValidator) -> None:
    [event] = ev.rest_events(Access("delete", ("Observation/5",), ("p1",)), DOCTOR, SERVER,
                             Outcome(204), WHEN)
    assert codes(event) == ("rest", "delete", "D")
    assert agent_types(event) == [("110150", False), ("custodian", False), ("AUT", True)]
    assert_valid(validator, event)


def test_vread_history_operation_and_bundles(validator: FhirkitValidator) -> None:
    [vread] = ev.rest_events(Access("vread", ("Patient/p1/_history/3",), ("p1",)), DOCTOR,
                             SERVER, OK, WHEN)
    [history] = ev.rest_events(Access("history-instance", ("Patient/p1",), ("p1",)),
                               DOCTOR, SERVER, OK, WHEN)
    [type_history] = ev.rest_events(Access("history-type", query="Patient/_history"),
                                    DOCTOR, SERVER, OK, WHEN)
    [everything] = ev.rest_events(Access("operation", ("Patient/p1",), ("p1",),
                                         query="Patient/p1/$everything",
                                         operation="$everything"), DOCTOR, SERVER, OK, WHEN)
    [transaction] = ev.rest_events(Access("transaction"), DOCTOR, SERVER, OK, WHEN)
    assert codes(vread) == ("rest", "vread", "R")
    assert codes(history) == ("rest", "history-instance", "R")
    assert codes(type_history) == ("rest", "history-type", "E")
    assert codes(everything) == ("rest", "operation", "E")
    assert [r for r, _ in entity_roles(everything)] == ["", "24", "4", "1"]
    assert everything["entity"][1]["description"] == "$everything"
    assert codes(transaction) == ("rest", "transaction", "E")
    for event in (vread, history, type_history, everything, transaction):
        assert_valid(validator, event)


def test_failures_carry_the_outcome(validator: FhirkitValidator) -> None:
    [denied] = ev.rest_events(Access("read", ("Patient/p2",), ("p2",)), DOCTOR, SERVER,
                              Outcome(403, "scope does not allow reading Patient"), WHEN)
    [broken] = ev.rest_events(Access("read", ("Patient/p2",)), DOCTOR, SERVER,
                              Outcome(500, "store unavailable"), WHEN)
    assert denied["outcome"] == "4"
    assert denied["outcomeDesc"] == "scope does not allow reading Patient"
    assert broken["outcome"] == "8"
    assert "outcomeDesc" not in ev.rest_events(Access("read", ("Patient/p2",)), DOCTOR,
                                               SERVER, Outcome(200, "fine"), WHEN)[0]
    assert_valid(validator, denied)


def test_backend_service_and_anonymous_requestors(validator: FhirkitValidator) -> None:
    backend = Principal(sub="lab-sync", client_id="lab-sync", scopes=ScopeSet.parse(
        "system/*.rs"), token_id="jti-1", exp=0)
    patient_user = Principal(sub="pat", client_id="portal", scopes=ScopeSet.parse(
        "patient/*.rs"), token_id="jti-2", exp=0, fhir_user="Patient/p1", patient="p1")
    who_backend = Who.from_principal(backend, "10.0.0.5", "r2")
    who_patient = Who.from_principal(patient_user)
    who_nobody = Who.from_principal(None, "127.0.0.1")
    assert who_backend.user is None and who_backend.client_id == "lab-sync"
    assert who_patient.user == "pat" and who_patient.fhir_user == "Patient/p1"
    [by_backend] = ev.rest_events(Access("read", ("Patient/p1",), ("p1",)), who_backend,
                                  SERVER, OK, WHEN)
    [by_nobody] = ev.rest_events(Access("read", ("Patient/p1",), ("p1",)), who_nobody,
                                 SERVER, OK, WHEN)
    # without a user, the client is the requestor
    assert agent_types(by_backend) == [("110152", True), ("110153", False)]
    assert by_nobody["agent"][0]["who"]["identifier"]["value"] == "anonymous"
    assert_valid(validator, by_backend)
    assert_valid(validator, by_nobody)


def test_unknown_interaction_is_refused() -> None:
    with pytest.raises(ValueError):
        ev.rest_events(Access("peek"), DOCTOR, SERVER, OK, WHEN)


def test_login_success_and_failure(validator: FhirkitValidator) -> None:
    who = Who(address="198.51.100.4", request_id="r9")
    good = ev.login_event("drlee", who, SERVER, OK, WHEN)
    bad = ev.login_event("drlee", who, SERVER, Outcome(401, "wrong password"), WHEN)
    out = ev.login_event("drlee", who, SERVER, OK, WHEN, logout=True)
    assert codes(good) == ("110114", "110122", "E") and good["outcome"] == "0"
    assert bad["outcome"] == "4" and bad["outcomeDesc"] == "wrong password"
    assert codes(out)[1] == "110123"
    user = good["agent"][0]
    assert user["requestor"] and user["who"]["identifier"]["value"] == "drlee"
    assert user["network"]["address"] == "198.51.100.4"
    for event in (good, bad, out):
        assert_valid(validator, event)


def test_token_issue_refresh_and_revoke(validator: FhirkitValidator) -> None:
    form = {"grant_type": "authorization_code", "code": "SECRET-CODE",
            "code_verifier": "SECRET-VERIFIER", "client_id": "chart-app",
            "redirect_uri": "https://app.example/cb"}
    issued = ev.token_event("issue", DOCTOR, SERVER, OK, WHEN, request=form,
                            token_id="jti-9", patient="p1")
    refreshed = ev.token_event("refresh", DOCTOR, SERVER, OK, WHEN,
                               request={"grant_type": "refresh_token",
                                        "refresh_token": "SECRET-RT"}, token_id="jti-10")
    revoked = ev.token_event("revoke", DOCTOR, SERVER, OK, WHEN, token_id="jti-10")
    assert codes(issued) == ("110114", "ITI-71", "E")
    assert codes(revoked)[1] == "token-revoke"
    recorded = base64.b64decode(next(e for e in issued["entity"]
                                     if e.get("role", {}).get("code") == "24")["query"]).decode()
    assert "grant_type=authorization_code" in recorded and "SECRET" not in recorded
    assert "SECRET" not in str(refreshed)
    assert ("13", "jti-9") in entity_roles(issued)
    assert ("1", "Patient/p1") in entity_roles(issued)
    assert agent_types(issued) == [("110150", False), ("authserver", False), ("IRCP", True)]
    with pytest.raises(ValueError):
        ev.token_event("steal", DOCTOR, SERVER, OK, WHEN)
    for event in (issued, refreshed, revoked):
        assert_valid(validator, event)
