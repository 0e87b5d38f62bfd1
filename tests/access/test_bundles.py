"""Batch and transaction entries run as the bundle's sender: every entry meets the same
checks as the same request over HTTP."""

from __future__ import annotations

from typing import Any

from tests.access.conftest import LAB, World, observation

JSON = {"Content-Type": "application/fhir+json"}


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def get(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


def statuses(response: dict[str, Any]) -> list[str]:
    return [e["response"]["status"].split()[0] for e in response["entry"]]


async def test_batch_reads_of_another_patient_are_404_per_entry(world: World) -> None:
    a = await world.patient("A")
    sent = bundle("batch", get("Patient/A"), get("Patient/B"), get("Observation/b-lab"),
                  get("Observation/b-lab/_history"), get("Observation?subject=Patient/B"),
                  get("Observation/_history"), get("Practitioner/doc"))
    r = await a.post("", json=sent, headers=JSON)
    assert r.status_code == 200, r.text
    out = r.json()
    assert statuses(out) == ["200", "404", "404", "404", "200", "200", "200"]
    searched = out["entry"][4]["resource"]
    assert searched.get("entry", []) == []
    hist = out["entry"][5]["resource"]
    assert {e["fullUrl"].rsplit("/", 1)[1] for e in hist["entry"]} == {"a-lab", "a-vital"}


async def test_batch_writes_outside_the_compartment_fail_alone(world: World) -> None:
    a = await world.patient("A")
    own = {k: v for k, v in observation("x", "A", LAB).items() if k != "id"}
    other = {**own, "subject": {"reference": "Patient/B"}}
    sent = bundle("batch",
                  {"resource": own, "request": {"method": "POST", "url": "Observation"}},
                  {"resource": other, "request": {"method": "POST", "url": "Observation"}},
                  {"request": {"method": "DELETE", "url": "Observation/b-lab"}},
                  {"resource": observation("b-vital", "A", LAB),
                   "request": {"method": "PUT", "url": "Observation/b-vital"}})
    r = await a.post("", json=sent, headers=JSON)
    assert r.status_code == 200, r.text
    out = r.json()
    assert statuses(out) == ["201", "403", "403", "403"]
    outcome = out["entry"][1]["response"]["outcome"]
    assert outcome["issue"][0]["code"] == "forbidden"
    assert (await world.staff.get("Observation/b-lab")).status_code == 200
    assert (await world.staff.get("Observation/b-vital")).json()["subject"] == {
        "reference": "Patient/B"}


async def test_a_transaction_with_one_entry_outside_fails_whole(world: World) -> None:
    a = await world.patient("A")
    own = {k: v for k, v in observation("x", "A", LAB).items() if k != "id"}
    sent = bundle("transaction",
                  {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                   "resource": own, "request": {"method": "POST", "url": "Observation"}},
                  {"resource": observation("b-lab", "A", LAB),
                   "request": {"method": "PUT", "url": "Observation/b-lab"}})
    r = await a.post("", json=sent, headers=JSON)
    assert r.status_code == 403, r.text
    assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    total = (await world.staff.get("Observation", params={"_total": "accurate"})).json()
    assert total["total"] == 4  # A's own create was rolled back too


async def test_transaction_reads_and_conditional_references_stay_inside(world: World) -> None:
    a = await world.patient("A")
    note = {k: v for k, v in observation("x", "A", LAB).items() if k != "id"}
    # a conditional reference that only B's record satisfies resolves to nothing for A
    probe = {**note, "subject": {"reference": "Patient?family=Beta"}}
    r = await a.post("", json=bundle("transaction", {
        "resource": probe, "request": {"method": "POST", "url": "Observation"}}),
        headers=JSON)
    assert r.status_code == 404, r.text
    assert "matches no resource" in r.json()["issue"][0]["diagnostics"]
    own = {**note, "subject": {"reference": "Patient?family=Alpha"}}
    r = await a.post("", json=bundle(
        "transaction",
        {"resource": own, "request": {"method": "POST", "url": "Observation"}},
        get("Patient/B"), get("Condition?subject=Patient/B")), headers=JSON)
    assert r.status_code == 200, r.text
    out = r.json()
    assert statuses(out) == ["201", "404", "200"]
    assert out["entry"][2]["resource"].get("entry", []) == []
