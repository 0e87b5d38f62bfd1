"""The pure scope model: parsing SMART v1/v2 scopes, access decisions, narrowing."""

from __future__ import annotations

import pytest

from fhirpm.auth.scopes import (
    Access,
    Reach,
    ScopeSet,
    access,
    allows,
    covers,
    parse_scope,
    permission_of,
    within,
)


@pytest.mark.parametrize(("text", "context", "type_", "perms"), [
    ("patient/*.read", "patient", "*", "rs"),
    ("user/Observation.write", "user", "Observation", "cud"),
    ("system/*.*", "system", "*", "cruds"),
    ("patient/Patient.rs", "patient", "Patient", "rs"),
    ("user/*.cruds", "user", "*", "cruds"),
    ("system/*.rs", "system", "*", "rs"),
    ("patient/Observation.s", "patient", "Observation", "s"),
])
def test_parse_v1_and_v2(text: str, context: str, type_: str, perms: str) -> None:
    scope = parse_scope(text)
    assert scope is not None
    assert (scope.context, scope.type, scope.permissions) == (context, type_, frozenset(perms))
    assert scope.query == ()


def test_parse_query_constrained_scope() -> None:
    scope = parse_scope("patient/Observation.rs?category=http://terminology.hl7.org/"
                        "CodeSystem/observation-category|laboratory&status=final")
    assert scope is not None
    assert scope.query == (
        ("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),
        ("status", "final"))


@pytest.mark.parametrize("text", [
    "openid", "launch/patient", "patient/Observation.sr",  # v2 letters out of order
    "patient/Observation.", "clinic/Observation.rs", "patient/observation.rs",
    "patient/*.read?category=x",  # queries exist only in v2 syntax
    "patient/Observation.rs?", "patient/Observation.x",
])
def test_not_resource_scopes(text: str) -> None:
    assert parse_scope(text) is None


def test_scope_set_keeps_order_and_others() -> None:
    scopes = ScopeSet.parse("openid fhirUser  patient/*.rs openid launch/patient")
    assert str(scopes) == "openid fhirUser patient/*.rs launch/patient"
    assert scopes.other == {"openid", "fhirUser", "launch/patient"}
    assert [s.text for s in scopes.resource] == ["patient/*.rs"]
    assert "openid" in scopes and "profile" not in scopes


@pytest.mark.parametrize(("scope", "type_", "interaction", "expected"), [
    ("patient/*.read", "Observation", "read", True),
    ("patient/*.read", "Observation", "search-type", True),
    ("patient/*.read", "Observation", "create", False),
    ("user/Observation.write", "Observation", "update", True),
    ("user/Observation.write", "Observation", "read", False),
    ("user/Observation.write", "Condition", "update", False),
    ("patient/Patient.r", "Patient", "vread", True),
    ("patient/Patient.r", "Patient", "search", False),
    ("patient/Patient.s", "Patient", "history-type", True),
    ("user/*.cruds", "Encounter", "delete", True),
    ("user/*.cruds", "Encounter", "patch", True),
    ("system/*.rs", None, "search-system", True),
    ("system/Patient.rs", None, "search-system", False),
    ("openid fhirUser", "Patient", "read", False),
])
def test_allows(scope: str, type_: str | None, interaction: str, expected: bool) -> None:
    assert allows(scope, type_, interaction) is expected


def test_access_separates_patient_from_user_reach() -> None:
    scopes = ScopeSet.parse("patient/Observation.rs user/Condition.rs")
    assert scopes.access("Observation", "read") == Access(None, Reach(((),)))
    assert scopes.access("Condition", "read") == Access(Reach(((),)), None)
    assert not scopes.access("Encounter", "read").allowed


def test_query_constraints_are_alternatives_and_unconstrained_wins() -> None:
    lab = "patient/Observation.rs?category=laboratory"
    vital = "patient/Observation.rs?category=vital-signs"
    got = access(f"{lab} {vital}", "Observation", "search")
    assert got.patient is not None and not got.patient.everything
    assert set(got.patient.queries) == {(("category", "laboratory"),),
                                        (("category", "vital-signs"),)}
    wide = access(f"{lab} patient/Observation.rs", "Observation", "search")
    assert wide.patient is not None and wide.patient.everything
    assert wide.patient.queries == ((),)


def test_permission_of_rejects_unknown_interactions() -> None:
    assert permission_of("r") == "r"
    with pytest.raises(ValueError, match="unknown interaction"):
        permission_of("frobnicate")


@pytest.mark.parametrize(("granted", "requested", "expected"), [
    ("patient/*.rs openid", "patient/Observation.rs", True),
    ("patient/*.rs", "patient/*.rs", True),
    ("patient/Observation.rs", "patient/*.rs", False),  # wider type
    ("patient/*.rs", "patient/Observation.cruds", False),  # more permissions
    ("patient/*.rs", "user/Observation.rs", False),  # other context
    ("patient/Observation.r patient/Observation.s", "patient/Observation.rs", True),
    ("patient/*.read", "patient/Observation.rs", True),  # v1 grant covers v2 request
    ("patient/Observation.rs", "patient/Observation.rs?category=laboratory", True),
    ("patient/Observation.rs?category=laboratory", "patient/Observation.rs", False),
    ("patient/*.rs", "patient/*.rs offline_access", False),  # other scopes must be granted
    ("openid fhirUser", "openid", True),
])
def test_covers(granted: str, requested: str, expected: bool) -> None:
    assert covers(ScopeSet.parse(granted), ScopeSet.parse(requested)) is expected


def test_within_drops_what_is_not_allowed_and_unknown_words() -> None:
    requested = ScopeSet.parse("openid bogus patient/*.cruds patient/Observation.rs "
                               "system/*.rs launch/patient")
    allowed = ScopeSet.parse("openid launch/patient patient/*.rs")
    assert str(within(requested, allowed)) == "openid patient/Observation.rs launch/patient"
