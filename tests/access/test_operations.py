"""Operations: $validate reads a stored resource only within reach; operations without an
access rule of their own ($reindex, and any added later, such as $everything) need
unbounded access to their whole level, so patient tokens cannot run them."""

from __future__ import annotations

from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository.interactions import FhirResponse
from tests.access.conftest import LAB, World, observation

JSON = {"Content-Type": "application/fhir+json"}


async def test_validate_of_a_stored_resource_needs_it_within_reach(world: World) -> None:
    a = await world.patient("A")
    assert (await a.get("Observation/a-lab/$validate")).status_code == 200
    for path in ("Observation/b-lab/$validate", "Patient/B/$validate"):
        assert (await world.staff.get(path)).status_code == 200
        r = await a.get(path)
        assert r.status_code == 404, r.text
    r = await a.post("Observation/b-lab/$validate", json={
        "resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]},
        headers=JSON)
    assert r.status_code == 404


async def test_type_level_validate_checks_what_it_is_given(world: World) -> None:
    a = await world.patient("A")
    r = await a.post("Observation/$validate", json=observation("v", "B", LAB), headers=JSON)
    assert r.status_code == 200  # nothing is read or stored
    nothing = await world.patient("A", "patient/Condition.rs")
    r = await nothing.post("Observation/$validate", json=observation("v", "A", LAB),
                           headers=JSON)
    assert r.status_code == 403


async def test_reindex_needs_unbounded_access(world: World) -> None:
    params = {"json": {"resourceType": "Parameters"}, "headers": JSON}
    a = await world.patient("A")
    assert (await a.post("$reindex", **params)).status_code == 403
    assert (await a.post("Observation/$reindex", **params)).status_code == 403
    reader = await world.client("user/*.rs", fhir_user="Practitioner/doc")
    r = await reader.post("Observation/$reindex", **params)
    assert r.status_code == 403  # it changes state: a write scope it is
    r = await world.staff.post("Observation/$reindex", **params)
    assert r.status_code == 202, r.text


async def test_an_operation_without_a_rule_is_closed_to_patient_tokens(world: World) -> None:
    calls: list[str] = []

    async def everything(ix, req, type_, id_) -> FhirResponse:  # a stand-in $everything
        calls.append(f"{type_}/{id_}")
        return FhirResponse(200, b'{"resourceType":"Bundle","type":"searchset"}')

    register(world.app.state.interactions, OperationSpec(
        "everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        everything, instance=True, types=("Patient",)))
    a = await world.patient("A")
    assert (await a.get("Patient/A/$everything")).status_code == 403
    assert (await a.get("Patient/B/$everything")).status_code == 403
    assert (await world.staff.get("Patient/B/$everything")).status_code == 200
    assert calls == ["Patient/B"]
    assert (await a.get("Patient/A/$nope")).status_code == 400  # unknown: not supported
