"""The searchset Bundle: links and paging, _count, _total, _summary, _elements, includes,
lenient vs strict handling, POST _search, and the self link showing what was applied."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.conftest import BASE
from tests.search.helpers import ids, link, outcome, put_all, search

PEOPLE = [{"resourceType": "Patient", "id": f"p{n:02d}", "gender": "female" if n % 2 else "male",
           "birthDate": f"19{50 + n}-01-01", "name": [{"family": f"Fam{n % 3}"}],
           "managingOrganization": {"reference": f"Organization/org{n % 2}"},
           "generalPractitioner": [{"reference": f"Practitioner/dr{n % 2}"}]}
          for n in range(12)]
ORGS = [{"resourceType": "Organization", "id": f"org{n}", "name": f"Clinic {n}",
         "partOf": {"reference": "Organization/root"}} for n in range(2)]
ORGS.append({"resourceType": "Organization", "id": "root", "name": "Health system"})
DOCTORS = [{"resourceType": "Practitioner", "id": f"dr{n}", "name": [{"family": f"Doc{n}"}]}
           for n in range(2)]
VISITS = [{"resourceType": "Encounter", "id": f"e{n}", "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                     "code": "AMB"},
           "subject": {"reference": f"Patient/p{n:02d}"}} for n in range(3)]


@pytest.fixture
async def loaded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await put_all(client, [*ORGS, *DOCTORS, *PEOPLE, *VISITS])
    return client


def _path(url: str) -> str:
    assert url.startswith(BASE + "/") or url == BASE
    return url[len(BASE) + 1:]


def _params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


async def test_pages_follow_next_and_previous_links(loaded: httpx.AsyncClient) -> None:
    page = await search(loaded, "Patient", {"_count": "5", "_sort": "birthdate"})
    assert page["type"] == "searchset" and page["total"] == 12
    assert ids(page) == ["p00", "p01", "p02", "p03", "p04"]
    assert link(page, "previous") is None and link(page, "first")
    second = await search(loaded, _path(link(page, "next")))
    assert ids(second) == ["p05", "p06", "p07", "p08", "p09"]
    assert second["total"] == 12
    third = await search(loaded, _path(link(second, "next")))
    assert ids(third) == ["p10", "p11"] and link(third, "next") is None
    back = await search(loaded, _path(link(third, "previous")))
    assert ids(back) == ids(second)
    first = await search(loaded, _path(link(third, "first")))
    assert ids(first) == ids(page)


async def test_self_link_lists_exactly_what_was_applied(loaded: httpx.AsyncClient) -> None:
    page = await search(loaded, "Patient", [("gender", "female"), ("nonsense", "1"),
                                            ("birthdate", "notadate"), ("_count", "3"),
                                            ("_format", "json")])
    assert _params(link(page, "self")) == [("gender", "female"), ("_count", "3"),
                                           ("_format", "json")]
    problems = outcome(page)
    assert any("nonsense" in p for p in problems) and any("notadate" in p for p in problems)
    assert len(ids(page)) == 3 and page["total"] == 6
    nxt = _params(link(page, "next"))
    assert ("gender", "female") in nxt and ("nonsense", "1") not in nxt


async def test_strict_handling_refuses_what_lenient_ignores(loaded: httpx.AsyncClient) -> None:
    strict = {"Prefer": "handling=strict"}
    for query in ({"nonsense": "1"}, {"birthdate": "notadate"}, {"gender:exact": "x"},
                  {"_sort": "nonsense"}, {"_count": "-1"}, {"_include": "Patient:gender"}):
        r = await loaded.get("Patient", params=query, headers=strict)
        assert r.status_code == 400, (query, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
        lenient = await loaded.get("Patient", params=query)
        assert lenient.status_code == 200 and outcome(lenient.json())


async def test_count_caps_and_summary_count(loaded: httpx.AsyncClient) -> None:
    page = await search(loaded, "Patient", {"_count": "100000"})
    assert ("_count", "1000") in _params(link(page, "self"))  # capped to max_count
    counted = await search(loaded, "Patient", {"_summary": "count", "gender": "male"})
    assert counted["total"] == 6 and "entry" not in counted
    none = await search(loaded, "Patient", {"_total": "none"})
    assert "total" not in none
    accurate = await search(loaded, "Patient", {"_total": "accurate", "_count": "1"})
    assert accurate["total"] == 12 and len(ids(accurate)) == 1


async def test_summary_and_elements_shape_matches(loaded: httpx.AsyncClient) -> None:
    page = await search(loaded, "Patient", {"_elements": "gender", "_id": "p01"})
    resource = page["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in resource["meta"]["tag"])
    summary = await search(loaded, "Patient", {"_summary": "true", "_id": "p01"})
    assert "birthDate" in summary["entry"][0]["resource"]
    assert "generalPractitioner" not in summary["entry"][0]["resource"]  # not isSummary
    data = await search(loaded, "Organization", {"_summary": "data", "_id": "root"})
    assert data["entry"][0]["resource"]["name"] == "Health system"


async def test_include_revinclude_iterate_and_star(loaded: httpx.AsyncClient) -> None:
    page = await search(loaded, "Patient", {"_id": "p01,p02",
                                            "_include": "Patient:organization"})
    assert ids(page) == ["p01", "p02"] and sorted(ids(page, "include")) == ["org0", "org1"]
    page = await search(loaded, "Patient", [("_id", "p01"), ("_include", "Patient:organization"),
                                            ("_include:iterate", "Organization:partof")])
    assert sorted(ids(page, "include")) == ["org1", "root"]
    page = await search(loaded, "Patient", {"_id": "p01", "_include": "Patient:*"})
    assert sorted(ids(page, "include")) == ["dr1", "org1"]
    page = await search(loaded, "Patient", {
        "_id": "p01", "_include": "Patient:general-practitioner:Organization"})
    assert ids(page, "include") == []
    page = await search(loaded, "Organization", {"_id": "org0",
                                                 "_revinclude": "Patient:organization"})
    assert ids(page, "include") == ["p00", "p02", "p04", "p06", "p08", "p10"]
    page = await search(loaded, "Practitioner", [
        ("_id", "dr1"), ("_revinclude", "Patient:general-practitioner"),
        ("_revinclude:iterate", "Encounter:subject")])
    assert sorted(ids(page, "include")) == sorted(
        ["e1", *(f"p{n:02d}" for n in range(1, 12, 2))])


async def test_post_search_with_a_form_body(loaded: httpx.AsyncClient) -> None:
    r = await loaded.post("Patient/_search?_count=2", content="gender=male&_sort=-birthdate",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    page = r.json()
    assert ids(page) == ["p10", "p08"]
    nxt = await search(loaded, _path(link(page, "next")))  # links are GET URLs
    assert ids(nxt) == ["p06", "p04"]
    r = await loaded.post("_search", content="_type=Practitioner&name=doc1",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert ids(r.json()) == ["dr1"]
    r = await loaded.post("Patient/_search", content=b'{"gender": "male"}',
                          headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 415


async def test_bad_scopes_are_errors_not_searches(loaded: httpx.AsyncClient) -> None:
    assert (await loaded.get("Nonsense", params={"x": "1"})).status_code == 404
    assert (await loaded.get("", params={"_type": "Nonsense"})).status_code == 400
    assert (await loaded.get("Patient/p01/Nonsense")).status_code == 404
    assert (await loaded.get("Basic/b1/Observation")).status_code == 404
    r = await loaded.get("Patient", params={"_cursor": "garbage"})
    assert r.status_code == 400


async def test_no_input_gives_a_500(loaded: httpx.AsyncClient) -> None:
    odd = ["name:exact=", "_has:Patient", "_has:Nope:x:y=1", "subject.name=x",
           "general-practitioner.name=doc0", "general-practitioner:Nope.name=x",
           "birthdate=ge", "birthdate=x2020", "_sort=-", "_include=Patient",
           "_revinclude=Patient:organization:Nope", "identifier=a|b|c", "_count=9" * 30,
           "gender=%00", "name=\\", "organization:identifier=|", "_lastUpdated=ap2020",
           "_elements=", "_summary=nonsense", "_total=some", "_contained=true",
           "organization.partof.partof.name=health", "_text=x", "near=1|2|3"]
    for query in odd:
        for headers in ({}, {"Prefer": "handling=strict"}):
            r = await loaded.get(f"Patient?{query}", headers=headers)
            assert r.status_code in (200, 400), (query, r.status_code, r.text)
