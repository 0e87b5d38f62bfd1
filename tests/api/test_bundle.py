"""Batch and transaction Bundles over HTTP: reference rewriting, processing order,
all-or-nothing, per-entry outcomes, Prefer, and refusal of malformed bundles."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.errors import Category, FhirError
from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from tests.conftest import BASE, FHIR_JSON

DIV = '<div xmlns="http://www.w3.org/1999/xhtml">see urn:uuid:pat</div>'


def tx(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict:
    entry: dict[str, Any] = {"resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"],
                                         **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict[str, Any], url: str, full_url: str | None = None, **request: Any) -> dict:
    entry: dict[str, Any] = {"resource": resource,
                             "request": {"method": "PUT", "url": url, **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def call(method: str, url: str) -> dict[str, Any]:
    return {"request": {"method": method, "url": url}}


PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers"}], "gender": "male"}


async def send(client: httpx.AsyncClient, bundle: dict[str, Any],
               headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("", json=bundle, headers={**FHIR_JSON, **(headers or {})})


async def count(client: httpx.AsyncClient, type: str) -> int:
    return (await client.get(f"{type}/_history")).json()["total"]


def local(entry: dict[str, Any]) -> str:
    """`Patient/123` from an entry's response location."""
    location = entry["response"]["location"]
    return "/".join(location[len(BASE) + 1:].split("/")[:2])


# -- transactions -----------------------------------------------------------------------


async def test_urn_uuid_references_are_rewritten_everywhere(client: httpx.AsyncClient) -> None:
    patient = {**PATIENT, "text": {"status": "generated", "div": DIV}}
    encounter = {"resourceType": "Encounter", "status": "finished",
                 "class": {"code": "AMB"}, "subject": {"reference": "urn:uuid:pat"}}
    observation = {
        "resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "subject": {"reference": "urn:uuid:pat", "display": "Peter"},
        "encounter": {"reference": "urn:uuid:enc"},
        "extension": [{"url": "http://example.org/ext", "valueReference":
                       {"reference": "urn:uuid:enc"}}],
        "contained": [{"resourceType": "Provenance", "id": "p1",
                       "recorded": "2024-01-01T00:00:00Z",
                       "target": [{"reference": "urn:uuid:pat"}],
                       "agent": [{"who": {"reference": "urn:uuid:pat"}}]}],
    }
    r = await send(client, tx(post(observation, "urn:uuid:obs"), post(encounter, "urn:uuid:enc"),
                              post(patient, "urn:uuid:pat")))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "transaction-response"
    obs_ref, enc_ref, pat_ref = (local(e) for e in body["entry"])
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * 3
    stored = (await client.get(obs_ref)).json()
    assert stored["subject"] == {"reference": pat_ref, "display": "Peter"}
    assert stored["encounter"]["reference"] == enc_ref
    assert stored["extension"][0]["valueReference"]["reference"] == enc_ref
    provenance = stored["contained"][0]
    assert provenance["target"][0]["reference"] == pat_ref
    assert provenance["agent"][0]["who"]["reference"] == pat_ref
    assert (await client.get(enc_ref)).json()["subject"]["reference"] == pat_ref
    # narrative is text: a urn:uuid there stays as written
    assert (await client.get(pat_ref)).json()["text"]["div"] == DIV


async def test_response_entries_carry_location_etag_and_resource(
        client: httpx.AsyncClient) -> None:
    body = b'{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:a",' \
           b'"resource":{"resourceType":"Observation","status":"final","code":{"text":"w"},' \
           b'"valueQuantity":{"value":72.50}},"request":{"method":"POST","url":"Observation"}}]}'
    r = await client.post("", content=body, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    entry = r.json()["entry"][0]
    response = entry["response"]
    assert response["etag"] == 'W/"1"'
    assert response["location"].endswith("/_history/1")
    assert response["lastModified"] == entry["resource"]["meta"]["lastUpdated"]
    assert entry["fullUrl"] == f"{BASE}/{local(entry)}"
    assert b'"value":72.50' in r.content
    assert b'"value":72.50' in (await client.get(local(entry))).content


async def test_processing_order_delete_post_put_get(client: httpx.AsyncClient) -> None:
    doomed = (await client.post("Patient", json=PATIENT, headers=FHIR_JSON)).json()["id"]
    kept = (await client.post("Patient", json=PATIENT, headers=FHIR_JSON)).json()["id"]
    bundle = tx(call("GET", f"Patient/{doomed}"),
                put({**PATIENT, "id": kept, "gender": "female"}, f"Patient/{kept}"),
                post(PATIENT, "urn:uuid:new"),
                call("DELETE", f"Patient/{doomed}"),
                call("GET", f"Patient/{kept}"))
    r = await send(client, bundle)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    # answers in bundle order; the reads ran after every write
    assert statuses == ["410 Gone", "200 OK", "201 Created", "204 No Content", "200 OK"]
    assert r.json()["entry"][4]["resource"]["gender"] == "female"


async def test_a_failure_rolls_everything_back(client: httpx.AsyncClient) -> None:
    bad = {"resourceType": "Patient", "birthDate": "not a date"}
    r = await send(client, tx(post(PATIENT, "urn:uuid:a"), post(PATIENT, "urn:uuid:b"),
                              post(bad, "urn:uuid:c")))
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[2]" in outcome["issue"][0]["diagnostics"]
    assert "Patient.birthDate" in outcome["issue"][0]["expression"]
    assert await count(client, "Patient") == 0
    history = (await client.get("_history")).json()
    assert [e["fullUrl"] for e in history.get("entry", [])  # only the audit trail's records
            if "/AuditEvent/" not in e["fullUrl"]] == []


async def test_if_match_failure_rolls_back_earlier_writes(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=PATIENT, headers=FHIR_JSON)).json()["id"]
    stale = put({**PATIENT, "id": pid, "gender": "other"}, f"Patient/{pid}", ifMatch='W/"5"')
    r = await send(client, tx(post(PATIENT, "urn:uuid:x"), stale))
    assert r.status_code == 412
    assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    assert await count(client, "Patient") == 1
    good = put({**PATIENT, "id": pid, "gender": "other"}, f"Patient/{pid}", ifMatch='W/"1"')
    assert (await send(client, tx(good))).status_code == 200


async def test_put_with_placeholder_full_url_and_absolute_references(
        client: httpx.AsyncClient) -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "urn:uuid:p"},
                   "performer": [{"reference": "http://other.example/fhir/Practitioner/dr"}],
                   "hasMember": [{"reference": f"{BASE}/Observation/abs"}]}
    member = {"resourceType": "Observation", "status": "final", "code": {"text": "m"}}
    r = await send(client, tx(put({**PATIENT, "id": "p-1"}, "Patient/p-1", "urn:uuid:p"),
                              post(member, f"{BASE}/Observation/abs"),
                              post(observation)))
    assert r.status_code == 200, r.text
    member_ref = local(r.json()["entry"][1])
    stored = (await client.get(local(r.json()["entry"][2]))).json()
    assert stored["subject"]["reference"] == "Patient/p-1"
    assert stored["hasMember"][0]["reference"] == member_ref  # a POST gets a new id
    assert stored["performer"][0]["reference"] == "http://other.example/fhir/Practitioner/dr"


async def test_each_resource_may_change_only_once(client: httpx.AsyncClient) -> None:
    r = await send(client, tx(put({**PATIENT, "id": "twice"}, "Patient/twice"),
                              put({**PATIENT, "id": "twice", "gender": "female"},
                                  "Patient/twice")))
    assert r.status_code == 400
    assert "only once" in r.json()["issue"][0]["diagnostics"]
    assert (await client.get("Patient/twice")).status_code == 404


async def test_dangling_placeholder_reference_is_refused(client: httpx.AsyncClient) -> None:
    orphan = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
              "subject": {"reference": "urn:uuid:nobody"}}
    r = await send(client, tx(post(orphan)))
    assert r.status_code == 400
    assert "urn:uuid:nobody" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("prefer", "has_resource", "has_outcome"), [
    ("return=minimal", False, False),
    ("return=representation", True, False),
    ("return=OperationOutcome", False, True),
])
async def test_prefer_applies_to_entries(client: httpx.AsyncClient, prefer: str,
                                         has_resource: bool, has_outcome: bool) -> None:
    r = await send(client, tx(post(PATIENT)), headers={"Prefer": prefer})
    entry = r.json()["entry"][0]
    assert ("resource" in entry) is has_resource
    assert ("outcome" in entry["response"]) is has_outcome
    assert entry["response"]["status"] == "201 Created"


async def test_head_and_conditional_read_entries(client: httpx.AsyncClient) -> None:
    pid = (await client.post("Patient", json=PATIENT, headers=FHIR_JSON)).json()["id"]
    entries = [call("HEAD", f"Patient/{pid}"),
               {"request": {"method": "GET", "url": f"Patient/{pid}", "ifNoneMatch": 'W/"1"'}}]
    r = await send(client, tx(*entries))
    head, conditional = r.json()["entry"]
    assert head["response"]["status"] == "200 OK" and "resource" not in head
    assert conditional["response"]["status"] == "304 Not Modified"


# -- batch ------------------------------------------------------------------------------


async def test_batch_entries_succeed_and_fail_independently(client: httpx.AsyncClient) -> None:
    bad = {"resourceType": "Patient", "gender": 42}
    r = await send(client, tx(post(PATIENT), post(bad), call("GET", "Patient/missing"),
                              call("GET", "Nonsense/1"), post(PATIENT), kind="batch"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "404 Not Found",
                        "201 Created"]
    failed = body["entry"][1]["response"]["outcome"]
    assert failed["resourceType"] == "OperationOutcome"
    assert "Patient.gender" in failed["issue"][0]["expression"]
    assert await count(client, "Patient") == 2


async def test_a_batch_entry_failing_after_a_write_leaves_no_trace(
        client: httpx.AsyncClient, app: FastAPI) -> None:
    """Batch writes share a unit of work; an entry that fails after writing must still
    fail alone: its write disappears, the other entries' writes stay."""

    async def write_then_fail(ix: Interactions, req: FhirRequest, type: str | None,
                              id: str | None) -> FhirResponse:
        async with ix.repo.unit(req.uow) as unit:  # the handlers' pattern: one unit
            await ix.repo.create("Patient", {"resourceType": "Patient", "gender": "other"},
                                 uow=unit)
            raise FhirError(Category.BUSINESS_RULE, "changed my mind")

    register(app.state.interactions, OperationSpec(
        "write-then-fail", "http://example.org/OperationDefinition/x", write_then_fail,
        type=True, affects_state=True))
    r = await send(client, tx(post(PATIENT), {"resource": PATIENT, "request": {
        "method": "POST", "url": "Patient/$write-then-fail"}}, post(PATIENT), kind="batch"))
    statuses = [e["response"]["status"][:3] for e in r.json()["entry"]]
    assert statuses == ["201", "422", "201"]
    stored = (await client.get("Patient/_history")).json()
    assert stored["total"] == 2
    assert {e["resource"]["gender"] for e in stored["entry"]} == {"male"}


async def test_batch_writes_run_before_reads(client: httpx.AsyncClient) -> None:
    r = await send(client, tx(call("GET", "Patient/early"),
                              put({**PATIENT, "id": "early"}, "Patient/early"), kind="batch"))
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["200 OK", "201 Created"]  # the spec's order: writes, then reads


async def test_batch_does_not_rewrite_references(client: httpx.AsyncClient) -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "urn:uuid:p"}}
    r = await send(client, tx(post(PATIENT, "urn:uuid:p"), post(observation), kind="batch"))
    stored = r.json()["entry"][1]["resource"]
    assert stored["subject"]["reference"] == "urn:uuid:p"


# -- malformed bundles ------------------------------------------------------------------


@pytest.mark.parametrize(("bundle", "path"), [
    ({"resourceType": "Patient"}, "Bundle"),
    ({"resourceType": "Bundle", "type": "collection"}, "Bundle.type"),
    ({"resourceType": "Bundle", "type": "batch", "entry": {}}, "Bundle.entry"),
    (tx("nope"), "Bundle.entry[0]"),
    (tx({"resource": PATIENT}), "Bundle.entry[0].request"),
    (tx({"request": {"method": "FETCH", "url": "Patient"}}), "Bundle.entry[0].request.method"),
    (tx({"request": {"method": "GET"}}), "Bundle.entry[0].request.url"),
    (tx({"request": {"method": "POST", "url": "Patient"}}), "Bundle.entry[0].resource"),
    (tx(call("GET", "http://elsewhere.example/fhir/Patient/1")), "Bundle.entry[0].request.url"),
    (tx(post(PATIENT, "urn:uuid:a"), post(PATIENT, "urn:uuid:a")), "Bundle.entry[1].fullUrl"),
    (tx({"resource": tx(), "request": {"method": "POST", "url": "/"}}),
     "Bundle.entry[0].request.url"),
    (tx({"request": {"method": "GET", "url": "Patient", "ifNoneMatch": 1}}),
     "Bundle.entry[0].request.ifNoneMatch"),
])
async def test_malformed_bundles_are_400_with_paths(client: httpx.AsyncClient,
                                                    bundle: dict[str, Any], path: str) -> None:
    r = await send(client, bundle)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == [path]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("", content=b'{"resourceType": "Bundle", ', headers=FHIR_JSON)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


# -- conditional references, creates and updates ------------------------------------------

MRN = {"system": "urn:mrn", "value": "7"}


async def _patient_with_mrn(client: httpx.AsyncClient, value: str = "7") -> str:
    body = {**PATIENT, "identifier": [{"system": "urn:mrn", "value": value}]}
    r = await client.post("Patient", json=body, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _observation(subject: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": subject}}


async def test_conditional_references_resolve_to_the_match(client: httpx.AsyncClient) -> None:
    pid = await _patient_with_mrn(client)
    r = await send(client, tx(post(_observation("Patient?identifier=urn:mrn|7"))))
    assert r.status_code == 200, r.text
    stored = (await client.get(local(r.json()["entry"][0]))).json()
    assert stored["subject"]["reference"] == f"Patient/{pid}"


@pytest.mark.parametrize(("count", "status"), [(0, 404), (2, 412)])
async def test_conditional_reference_without_exactly_one_match_fails_all(
        client: httpx.AsyncClient, count: int, status: int) -> None:
    for _ in range(count):
        await _patient_with_mrn(client)
    r = await send(client, tx(post(PATIENT),
                              post(_observation("Patient?identifier=urn:mrn|7"))))
    assert r.status_code == status, r.text
    assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    assert await count_of(client, "Observation") == 0
    assert await count_of(client, "Patient") == count


async def count_of(client: httpx.AsyncClient, type: str) -> int:
    """How many `type` resources exist now (a search count, not versions)."""
    r = await client.get(f"{type}?_summary=count")
    assert r.status_code == 200, r.text
    return r.json()["total"]


async def test_conditional_create_in_a_transaction_links_to_the_match(
        client: httpx.AsyncClient) -> None:
    pid = await _patient_with_mrn(client)
    body = {**PATIENT, "identifier": [MRN]}
    r = await send(client, tx(post(body, "urn:uuid:p", ifNoneExist="identifier=urn:mrn|7"),
                              post(_observation("urn:uuid:p"))))
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"] == "200 OK"
    assert (await client.get(local(second))).json()["subject"]["reference"] == f"Patient/{pid}"
    assert await count_of(client, "Patient") == 1


async def test_conditional_create_without_match_creates_and_links(
        client: httpx.AsyncClient) -> None:
    body = {**PATIENT, "identifier": [MRN]}
    r = await send(client, tx(post(body, "urn:uuid:p", ifNoneExist="identifier=urn:mrn|7"),
                              post(_observation("urn:uuid:p"))))
    first, second = r.json()["entry"]
    assert first["response"]["status"] == "201 Created"
    assert (await client.get(local(second))).json()["subject"]["reference"] == local(first)


@pytest.mark.parametrize("exists", [True, False])
async def test_conditional_put_with_placeholder_full_url(client: httpx.AsyncClient,
                                                         exists: bool) -> None:
    pid = await _patient_with_mrn(client) if exists else None
    body = {**PATIENT, "identifier": [MRN], "gender": "female"}
    r = await send(client, tx(put(body, "Patient?identifier=urn:mrn|7", "urn:uuid:p"),
                              post(_observation("urn:uuid:p"))))
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"] == ("200 OK" if exists else "201 Created")
    target = local(first)
    if exists:
        assert target == f"Patient/{pid}"
    assert (await client.get(target)).json()["gender"] == "female"
    assert (await client.get(local(second))).json()["subject"]["reference"] == target
    assert await count_of(client, "Patient") == 1


async def test_batch_conditional_creates_match(client: httpx.AsyncClient) -> None:
    await _patient_with_mrn(client)
    body = {**PATIENT, "identifier": [MRN]}
    r = await send(client, tx(post(body, ifNoneExist="identifier=urn:mrn|7"),
                              post(body, ifNoneExist="identifier=urn:mrn|8"), kind="batch"))
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["200 OK", "201 Created"]
