"""The gate itself: a route nobody gave an access rule is closed to every token, and
trusted internal callers (principal None: the loader, HL7 v2 inbound) pass unchecked."""

from __future__ import annotations

import pytest

from fhirpm.repository import interactions
from fhirpm.repository.interactions import FhirRequest, FhirResponse
from tests.access.conftest import World
from tests.conftest import BASE


async def test_a_route_without_an_access_rule_is_refused(world: World,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[str] = []

    async def touch(ix, req, parts) -> FhirResponse:
        served.append(req.path)
        return FhirResponse(200, b"{}")

    monkeypatch.setitem(interactions._ROUTES["T/I"], "POST", touch)
    r = await world.staff.post("Patient/A", json={}, headers={
        "Content-Type": "application/fhir+json"})
    assert r.status_code == 403, r.text
    assert "no access rule" in r.json()["issue"][0]["diagnostics"]
    anonymous = await world.client(None)
    r = await anonymous.post("Patient/A", json={}, headers={
        "Content-Type": "application/fhir+json"})
    assert r.status_code == 401
    assert served == []


async def test_trusted_internal_callers_are_not_checked(world: World) -> None:
    ix = world.app.state.interactions
    answer = await ix.dispatch(FhirRequest("GET", "Observation/b-lab", BASE))
    assert answer.status == 200
    a = await world.patient("A")  # the same read over HTTP with a patient token: 404
    assert (await a.get("Observation/b-lab")).status_code == 404
