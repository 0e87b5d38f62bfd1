"""Query strings -> the AST: escapes, prefixes, chains, _has, composites, results
parameters, and what lenient parsing reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhirpm.errors import FhirError
from fhirpm.search.dates import date_range
from fhirpm.search.parse import SearchParser
from fhirpm.search.query import (
    AllOf,
    AnyOf,
    Chain,
    DatePred,
    Has,
    Include,
    Missing,
    Not,
    NumberPred,
    Param,
    QuantityPred,
    RefPred,
    SortKey,
    StringPred,
    TokenPred,
    UriPred,
)
from fhirpm.search.registry import Registry

NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def parser() -> SearchParser:
    return SearchParser(Registry.load_default(), base="http://me/fhir", now=NOW)


def where(parser: SearchParser, type_: str, *params: tuple[str, str]) -> tuple:
    return parser.parse([type_], list(params), strict=True).query.where


def test_escapes_split_or_and_keep_literals(parser: SearchParser) -> None:
    (clause,) = where(parser, "Patient", ("family", r"a\,b,c"))
    assert clause == Param("family", "string", (StringPred("a,b"), StringPred("c")))
    (clause,) = where(parser, "Patient", ("identifier", r"sys|va\|lue"))
    assert clause.preds == (TokenPred("va|lue", "sys"),)
    (clause,) = where(parser, "Patient", ("identifier", "|x"))
    assert clause.preds == (TokenPred("x", None, no_system=True),)


def test_prefixes_and_ranges(parser: SearchParser) -> None:
    (clause,) = where(parser, "Patient", ("birthdate", "ge2020-02"))
    lo, hi = date_range("2020-02")
    assert clause.preds == (DatePred("ge", lo, hi),)
    (clause,) = where(parser, "RiskAssessment", ("probability", "1.50"))
    assert clause.preds == (NumberPred("eq", 1.5, 1.495, 1.505),)
    (clause,) = where(parser, "RiskAssessment", ("probability", "ap100"))
    assert clause.preds == (NumberPred("ap", 100.0, 90.0, 110.0),)
    (clause,) = where(parser, "Observation", ("value-quantity", "lt5.4||mg"))
    assert clause.preds == (QuantityPred("lt", 5.4, 5.35, 5.45, None, "mg"),)
    (clause,) = where(parser, "Patient", ("birthdate", "ap2015"))
    lo, hi = date_range("2015")
    margin = (int(NOW.timestamp() * 1e6) - lo) // 10
    assert clause.preds == (DatePred("ap", lo - margin, hi + margin),)


def test_modifiers(parser: SearchParser) -> None:
    assert where(parser, "Patient", ("gender:not", "male")) == (
        Not(Param("gender", "token", (TokenPred("male"),))),)
    assert where(parser, "Patient", ("birthdate:missing", "true")) == (
        Missing("birthdate", "date", True),)
    assert where(parser, "Patient", ("identifier:of-type", "s|MR|123")) == (
        Param("identifier:of-type", "token", (TokenPred("123", "s|MR"),)),)
    (clause,) = where(parser, "ValueSet", ("url:above", "http://x.org/a/b"))
    assert clause.preds == (UriPred("http://x.org/a/b", "above",
                                    ("http://x.org", "http://x.org/a", "http://x.org/a/b")),)
    (clause,) = where(parser, "Observation", ("subject", "http://me/fhir/Patient/1"))
    assert clause.preds == (RefPred("Patient", "1"),)  # our own base: local
    (clause,) = where(parser, "Observation", ("subject:Patient", "1"))
    assert clause.preds == (RefPred("Patient", "1"),)
    (clause,) = where(parser, "Patient", ("general-practitioner", "http://x/fhir/Practitioner/2"))
    assert clause.preds == (RefPred(url="http://x/fhir/Practitioner/2"),)


def test_chains_has_and_composites(parser: SearchParser) -> None:
    (clause,) = where(parser, "Observation", ("patient.general-practitioner:Practitioner.name",
                                              "doe"))
    assert clause == Chain("patient", (("Patient", Chain("general-practitioner", (
        ("Practitioner", Param("name", "string", (StringPred("doe"),))),))),))
    (clause,) = where(parser, "Patient", ("_has:Observation:patient:_has:AuditEvent:entity:type",
                                          "x"))
    assert isinstance(clause, Has) and isinstance(clause.clause, Has)
    (clause,) = where(parser, "Observation",
                      ("code-value-quantity", "http://loinc.org|1$gt5,http://loinc.org|2$lt1"))
    assert isinstance(clause, AnyOf) and all(isinstance(c, AllOf) for c in clause.clauses)
    assert clause.clauses[0].clauses[0] == Param("code", "token", (TokenPred("1",
                                                                             "http://loinc.org"),))


def test_results_parameters(parser: SearchParser) -> None:
    parsed = parser.parse(["Patient"], [("_sort", "-birthdate,family"), ("_count", "5"),
                                        ("_total", "accurate"), ("_include", "Patient:*"),
                                        ("_revinclude:iterate", "Encounter:subject")])
    q = parsed.query
    assert q.sort == (SortKey("birthdate", "date", True), SortKey("family", "string"))
    assert q.count == 5 and q.total == "accurate"
    assert "general-practitioner" in q.include[0].codes and "organization" in q.include[0].codes
    assert q.revinclude == (Include("Encounter", ("subject",), None, True),)
    assert parser.parse(["Patient"], [("_summary", "count")]).query.count == 0


def test_lenient_reports_and_strict_refuses(parser: SearchParser) -> None:
    params = [("gender", "male"), ("bogus", "1"), ("birthdate", "2020-13-45"),
              ("name:fuzzy", "x"), ("_sort", "bogus")]
    parsed = parser.parse(["Patient"], params)
    assert parsed.applied == [("gender", "male")]
    assert len(parsed.issues) == 4 and all(i.severity == "warning" for i in parsed.issues)
    with pytest.raises(FhirError) as err:
        parser.parse(["Patient"], params, strict=True)
    assert err.value.status == 400 and len(err.value.issues) == 4
