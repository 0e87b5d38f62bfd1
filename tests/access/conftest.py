"""Access fixtures: the real app with two patients' records and the directory around them,
and clients holding real tokens of chosen scopes (minted by the app's authorization
server, verified on every request).

    Patient A (Alpha) and B (Beta); for each: a laboratory and a vital-signs Observation
    (performed by Practitioner doc), a Condition; for B also an Encounter, a
    MedicationRequest (Medication med, requested by doc), a deleted Condition and an
    Observation with two versions. Directory: Practitioner doc, Organization org,
    Location loc, Medication med, Schedule sched (actor doc) and its Slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.bearer import bearer, mint
from tests.conftest import BASE, FHIR_JSON

LAB = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                   "code": "laboratory"}]}
VITAL = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                     "code": "vital-signs"}]}
PATIENT_SCOPE = "patient/*.cruds"


def observation(id_: str, patient: str, category: dict[str, Any], value: str = "1") -> dict:
    return {"resourceType": "Observation", "id": id_, "status": "final",
            "category": [category], "code": {"coding": [{"system": "http://loinc.org",
                                                          "code": "718-7"}], "text": value},
            "subject": {"reference": f"Patient/{patient}"},
            "performer": [{"reference": "Practitioner/doc"}]}


def condition(id_: str, patient: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": id_, "code": {"text": "asthma"},
            "subject": {"reference": f"Patient/{patient}"}}


DIRECTORY = [
    {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Doctor"}]},
    {"resourceType": "Organization", "id": "org", "name": "Practice"},
    {"resourceType": "Location", "id": "loc", "name": "Room 1"},
    {"resourceType": "Medication", "id": "med", "code": {"text": "salbutamol"}},
    {"resourceType": "Schedule", "id": "sched", "actor": [{"reference": "Practitioner/doc"}]},
    {"resourceType": "Slot", "id": "slot", "schedule": {"reference": "Schedule/sched"},
     "status": "free", "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T09:15:00Z"},
]
RECORDS = [
    {"resourceType": "Patient", "id": "A", "name": [{"family": "Alpha"}]},
    {"resourceType": "Patient", "id": "B", "name": [{"family": "Beta"}]},
    observation("a-lab", "A", LAB), observation("a-vital", "A", VITAL),
    observation("b-lab", "B", LAB), observation("b-vital", "B", VITAL),
    condition("a-cond", "A"), condition("b-cond", "B"), condition("b-gone", "B"),
    {"resourceType": "Encounter", "id": "b-enc", "status": "finished",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
     "subject": {"reference": "Patient/B"},
     "participant": [{"individual": {"reference": "Practitioner/doc"}}]},
    {"resourceType": "MedicationRequest", "id": "b-mr", "status": "active", "intent": "order",
     "medicationReference": {"reference": "Medication/med"},
     "subject": {"reference": "Patient/B"}, "requester": {"reference": "Practitioner/doc"}},
]


class World:
    """The app with its data, and clients by scope."""

    def __init__(self, app: FastAPI, stack: AsyncExitStack) -> None:
        self.app = app
        self._stack = stack
        self.staff: httpx.AsyncClient = None  # type: ignore[assignment]

    async def token(self, scope: str, *, patient: str | None = None,
                    fhir_user: str | None = None) -> str:
        return await mint(self.app.state.auth, scope, patient=patient, fhir_user=fhir_user)

    async def client(self, scope: str | None, *, patient: str | None = None,
                     fhir_user: str | None = None) -> httpx.AsyncClient:
        """A client holding a token of `scope` (None: no token at all)."""
        headers = {"Accept": "application/fhir+json"}
        if scope is not None:
            headers |= bearer(await self.token(scope, patient=patient, fhir_user=fhir_user))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url=BASE + "/", headers=headers)
        return await self._stack.enter_async_context(http)

    async def patient(self, id_: str = "A", scope: str = PATIENT_SCOPE) -> httpx.AsyncClient:
        """A patient app launched for `id_` (a patient user signed in for themselves)."""
        return await self.client(scope, patient=id_, fhir_user=f"Patient/{id_}")


async def load(staff: httpx.AsyncClient) -> None:
    for resource in DIRECTORY + RECORDS:
        path = f"{resource['resourceType']}/{resource['id']}"
        r = await staff.put(path, json=resource, headers=FHIR_JSON)
        assert r.status_code == 201, r.text
    changed = observation("b-lab", "B", LAB, value="2")  # a second version
    assert (await staff.put("Observation/b-lab", json=changed,
                            headers=FHIR_JSON)).status_code == 200
    assert (await staff.delete("Condition/b-gone")).status_code == 204


@pytest.fixture
async def world(app: FastAPI) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:
        made = World(app, stack)
        made.staff = await made.client("user/*.cruds", fhir_user="Practitioner/doc")
        await load(made.staff)
        yield made


Get = Callable[..., Awaitable[httpx.Response]]


def ids(bundle: dict[str, Any], mode: str | None = "match") -> set[str]:
    """`Type/id` of the bundle's entries (of one search mode; None: every entry)."""
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", []) if "resource" in e
            and e["resource"]["resourceType"] != "OperationOutcome"
            and (mode is None or e.get("search", {}).get("mode") == mode)}


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == relation), None)
