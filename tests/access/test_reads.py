"""A patient token reads its own patient's records and the directory, and nothing of
another patient's: read, vread, conditional reads and deleted resources answer exactly
as for a resource that was never stored (404), so existence stays hidden."""

from __future__ import annotations

import pytest

from tests.access.conftest import World


@pytest.mark.parametrize("path", ["Patient/B", "Observation/b-lab", "Observation/b-vital",
                                  "Condition/b-cond", "Encounter/b-enc",
                                  "MedicationRequest/b-mr", "Observation/b-lab/_history/1",
                                  "Observation/b-lab/_history/2"])
async def test_another_patients_records_are_not_found(world: World, path: str) -> None:
    assert (await world.staff.get(path)).status_code == 200  # it is there
    a = await world.patient("A")
    r = await a.get(path)
    assert r.status_code == 404, r.text
    never = await a.get(path.replace("b-", "never-").replace("Patient/B", "Patient/Z"))
    assert never.status_code == 404
    type_, id_ = path.split("/")[:2]
    assert r.json()["issue"] == [{"severity": "error", "code": "not-found",
                                  "diagnostics": f"{type_}/{id_} is not known"}]
    assert never.json()["issue"][0]["diagnostics"] == \
        f"{type_}/{id_.replace('b-', 'never-').replace('B', 'Z')} is not known"
    assert set(r.headers) == set(never.headers)  # no ETag, no Last-Modified


@pytest.mark.parametrize("path", ["Patient/A", "Observation/a-lab", "Observation/a-vital",
                                  "Condition/a-cond", "Observation/a-lab/_history/1"])
async def test_own_records_are_readable(world: World, path: str) -> None:
    a = await world.patient("A")
    r = await a.get(path)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == path.split("/")[1]


@pytest.mark.parametrize("path", ["Practitioner/doc", "Organization/org", "Location/loc",
                                  "Medication/med", "Schedule/sched", "Slot/slot"])
async def test_directory_types_are_readable(world: World, path: str) -> None:
    a = await world.patient("A")
    assert (await a.get(path)).status_code == 200
    # as the scopes allow: a token without them gets a 403
    only_obs = await world.patient("A", "patient/Observation.rs")
    assert (await only_obs.get(path)).status_code == 403


async def test_a_deleted_resource_of_another_patient_is_404_not_410(world: World) -> None:
    assert (await world.staff.get("Condition/b-gone")).status_code == 410
    b = await world.patient("B")
    assert (await b.get("Condition/b-gone")).status_code == 410  # B's own: gone
    assert (await b.get("Condition/b-gone/_history/2")).status_code == 410
    a = await world.patient("A")
    assert (await a.get("Condition/b-gone")).status_code == 404
    assert (await a.get("Condition/b-gone/_history/2")).status_code == 404


async def test_conditional_reads_do_not_reveal_versions(world: World) -> None:
    a = await world.patient("A")
    for headers in ({"If-None-Match": 'W/"2"'}, {"If-None-Match": "*"},
                    {"If-Modified-Since": "Wed, 01 Jan 2100 00:00:00 GMT"}):
        r = await a.get("Observation/b-lab", headers=headers)
        assert r.status_code == 404, headers
    own = await a.get("Observation/a-lab", headers={"If-None-Match": 'W/"1"'})
    assert own.status_code == 304


async def test_a_resource_moved_between_patients_is_judged_by_each_version(
        world: World) -> None:
    moved = (await world.staff.get("Observation/a-vital")).json()
    moved["subject"] = {"reference": "Patient/B"}
    assert (await world.staff.put("Observation/a-vital", json=moved,
                                  headers={"Content-Type": "application/fhir+json"})
            ).status_code == 200
    a = await world.patient("A")
    assert (await a.get("Observation/a-vital")).status_code == 404  # B's now
    assert (await a.get("Observation/a-vital/_history/1")).status_code == 200  # was A's
    assert (await a.get("Observation/a-vital/_history/2")).status_code == 404
    b = await world.patient("B")
    assert (await b.get("Observation/a-vital/_history/1")).status_code == 404
    assert (await b.get("Observation/a-vital")).status_code == 200


async def test_a_patient_without_a_launch_context_reaches_no_compartment(
        world: World) -> None:
    lost = await world.client("patient/*.rs")  # no `patient` claim in the token
    assert (await lost.get("Observation/a-lab")).status_code == 403
    assert (await lost.get("Practitioner/doc")).status_code == 200  # the directory still
