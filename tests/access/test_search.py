"""Searches by a patient token see only that patient's compartment, on every path: the
search itself (with exact totals and paging), _include, _revinclude, chains, _has,
compartment and system searches, POST _search and the paging links. Each check first
shows that staff do see the other patient's data, so an empty answer means filtered."""

from __future__ import annotations

from typing import Any

import httpx

from tests.access.conftest import World, ids, link

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def search(client: httpx.AsyncClient, path: str, params: Any = None) -> dict[str, Any]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_type_search_is_filtered_with_exact_totals(world: World) -> None:
    staff = await search(world.staff, "Observation", {"_total": "accurate"})
    assert staff["total"] == 4
    a = await world.patient("A")
    mine = await search(a, "Observation", {"_total": "accurate"})
    assert ids(mine) == {"Observation/a-lab", "Observation/a-vital"}
    assert mine["total"] == 2
    assert ids(await search(a, "Patient")) == {"Patient/A"}
    assert ids(await search(a, "Condition", {"subject": "Patient/B"})) == set()
    assert ids(await search(a, "Observation", {"_id": "b-lab"})) == set()
    count = await search(a, "Observation", {"_summary": "count"})
    assert count["total"] == 2


async def test_post_search_is_filtered(world: World) -> None:
    a = await world.patient("A")
    for path in ("Observation/_search", "_search"):
        r = await a.post(path, content="_type=Observation&category=laboratory", headers=FORM)
        assert r.status_code == 200, r.text
        assert ids(r.json()) == {"Observation/a-lab"}


async def test_paging_links_stay_inside_the_compartment(world: World) -> None:
    a = await world.patient("A")
    seen: list[str] = []
    page = await search(a, "Observation", {"_count": "1", "_total": "accurate"})
    assert page["total"] == 2
    while True:
        seen += sorted(ids(page))
        following = link(page, "next")
        if following is None:
            break
        page = await search(a, following)
    assert sorted(seen) == ["Observation/a-lab", "Observation/a-vital"]
    # a next link issued to staff, replayed with A's token, still shows only A's data
    staff_page = await search(world.staff, "Observation", {"_count": "1"})
    replayed: list[str] = []
    url = link(staff_page, "next")
    while url is not None:
        page = await search(a, url)
        replayed += sorted(ids(page))
        url = link(page, "next")
    assert set(replayed) <= {"Observation/a-lab", "Observation/a-vital"}
    # the links carry what the client asked for, not the confinement
    assert "subject" not in link(page, "self") and "Patient" not in link(page, "self")


async def test_includes_are_filtered(world: World) -> None:
    staff = await search(world.staff, "Observation", {"_include": "Observation:subject"})
    assert {"Patient/A", "Patient/B"} <= ids(staff, "include")
    a = await world.patient("A")
    mine = await search(a, "Observation", {"_include": "Observation:subject"})
    assert ids(mine, "include") == {"Patient/A"}
    # the directory is included as the scopes allow
    performer = await search(a, "Observation", {"_include": "Observation:performer"})
    assert ids(performer, "include") == {"Practitioner/doc"}
    only_obs = await world.patient("A", "patient/Observation.rs")
    nothing = await search(only_obs, "Observation", {"_include": "Observation:performer"})
    assert ids(nothing, "include") == set()
    assert ids(nothing) == {"Observation/a-lab", "Observation/a-vital"}


async def test_revincludes_are_filtered(world: World) -> None:
    params = {"_id": "doc", "_revinclude": ["Observation:performer", "Encounter:participant",
                                            "MedicationRequest:requester"]}
    staff = await search(world.staff, "Practitioner", params)
    assert {"Observation/b-lab", "Encounter/b-enc", "MedicationRequest/b-mr"} <= ids(
        staff, "include")
    a = await world.patient("A")
    mine = await search(a, "Practitioner", params)
    assert ids(mine) == {"Practitioner/doc"}
    assert ids(mine, "include") == {"Observation/a-lab", "Observation/a-vital"}
    # iterate: from A's observations to their practitioner, then back to everyone's
    iterated = await search(a, "Observation", {
        "_include": "Observation:performer",
        "_revinclude:iterate": "Observation:performer"})
    assert ids(iterated, "include") == {"Practitioner/doc"}


async def test_chained_search_reaches_only_searchable_targets(world: World) -> None:
    staff = await search(world.staff, "Observation", {"subject:Patient.family": "Beta"})
    assert ids(staff) == {"Observation/b-lab", "Observation/b-vital"}
    a = await world.patient("A")
    assert ids(await search(a, "Observation", {"subject:Patient.family": "Beta"})) == set()
    assert ids(await search(a, "Observation", {"subject:Patient.family": "Alpha"})) == {
        "Observation/a-lab", "Observation/a-vital"}
    # the directory's chain through another patient's data reveals nothing
    probe = {"_has:Observation:performer:subject": "Patient/B"}
    assert ids(await search(world.staff, "Practitioner", probe)) == {"Practitioner/doc"}
    assert ids(await search(a, "Practitioner", probe)) == set()
    own = {"_has:Observation:performer:subject": "Patient/A"}
    assert ids(await search(a, "Practitioner", own)) == {"Practitioner/doc"}
    enc = {"_has:Encounter:participant:status": "finished"}  # only B has an Encounter
    assert ids(await search(world.staff, "Practitioner", enc)) == {"Practitioner/doc"}
    assert ids(await search(a, "Practitioner", enc)) == set()
    # a chain through a type the token may not search at all is refused
    only_obs = await world.patient("A", "patient/Observation.rs")
    r = await only_obs.get("Observation", params={"subject:Patient.family": "Alpha"})
    assert r.status_code == 403


async def test_has_on_patients_sees_only_the_compartment(world: World) -> None:
    probe = {"_has:Observation:subject:category": "laboratory"}
    assert ids(await search(world.staff, "Patient", probe)) == {"Patient/A", "Patient/B"}
    a = await world.patient("A")
    assert ids(await search(a, "Patient", probe)) == {"Patient/A"}


async def test_compartment_search_of_another_patient_is_empty(world: World) -> None:
    assert ids(await search(world.staff, "Patient/B/Observation")) == {
        "Observation/b-lab", "Observation/b-vital"}
    a = await world.patient("A")
    assert ids(await search(a, "Patient/B/Observation")) == set()
    assert ids(await search(a, "Patient/B/*")) == set()
    everything = await search(a, "Patient/A/*")  # A's audit trail is in A's compartment too
    assert {i for i in ids(everything) if not i.startswith("AuditEvent/")} == {
        "Patient/A", "Observation/a-lab", "Observation/a-vital", "Condition/a-cond"}


async def test_system_search_is_filtered_per_type(world: World) -> None:
    a = await world.patient("A")
    both = await search(a, "", {"_type": "Observation,Condition"})
    assert ids(both) == {"Observation/a-lab", "Observation/a-vital", "Condition/a-cond"}
    assert "total" not in both  # counted by the store with a looser union: not given
    mixed = await search(a, "", {"_type": "Observation,Practitioner", "_total": "accurate"})
    assert ids(mixed) == {"Observation/a-lab", "Observation/a-vital"}
    warnings = [i["diagnostics"] for e in mixed["entry"] if e["search"]["mode"] == "outcome"
                for i in e["resource"]["issue"]]
    assert any("Practitioner" in w and "on their own" in w for w in warnings)
    alone = await search(a, "", {"_type": "Practitioner", "_total": "accurate"})
    assert ids(alone) == {"Practitioner/doc"} and alone["total"] == 1
    everything = await search(a, "", {"_count": "100"})
    assert not {i for i in ids(everything) if i.endswith(("/B", "b-lab", "b-vital", "b-cond",
                                                           "b-enc", "b-mr"))}
    only_obs = await world.patient("A", "patient/Observation.rs")
    assert ids(await search(only_obs, "", {"_type": "Observation,Condition"})) == {
        "Observation/a-lab", "Observation/a-vital"}
    r = await only_obs.get("", params={"_type": "Condition,Encounter"})
    assert r.status_code == 403
