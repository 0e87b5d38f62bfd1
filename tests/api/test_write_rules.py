"""Write rules (Repository.add_rule) run inside the writer's unit of work on every path.

The rules here are small stand-ins for the workflow rules that use the mechanism (the
scheduling package's Appointment -> Slot rule): one that keeps a second resource in step,
one that refuses. What is checked is the mechanism: same unit, rollback on refusal,
bundles and deletes included."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from fhirpm.errors import Category, FhirError
from fhirpm.repository.service import Change, Repository
from fhirpm.storage.port import UnitOfWork
from tests.conftest import FHIR_JSON


class MirrorStatus:
    """Copies a Task's status into the Basic resource its `focus` points at."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    async def apply(self, repo: Repository, unit: UnitOfWork, change: Change) -> None:
        self.changes.append(change)
        if change.after is None:
            return
        if change.after.get("status") == "rejected":
            raise FhirError(Category.CONFLICT, "rejected tasks are refused by the rule")
        target_id = change.after["focus"]["reference"].split("/")[1]
        current = await unit.current("Basic", target_id)
        assert current is not None
        basic: dict[str, Any] = {"resourceType": "Basic", "id": target_id,
                                 "code": {"text": change.after["status"]}}
        await repo.replace(unit, current, basic, "PUT")


def _install(app: FastAPI) -> MirrorStatus:
    rule = MirrorStatus()
    app.state.interactions.repo.add_rule("Task", rule)
    return rule


def _task(status: str, basic_id: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "focus": {"reference": f"Basic/{basic_id}"}}


async def _basic(client: httpx.AsyncClient) -> str:
    r = await client.post("Basic", json={"resourceType": "Basic", "code": {"text": "new"}},
                          headers=FHIR_JSON)
    assert r.status_code == 201
    return r.json()["id"]


async def test_rule_writes_in_the_same_unit(app: FastAPI, client: httpx.AsyncClient) -> None:
    rule = _install(app)
    basic_id = await _basic(client)
    r = await client.post("Task", json=_task("requested", basic_id), headers=FHIR_JSON)
    assert r.status_code == 201
    assert (await client.get(f"Basic/{basic_id}")).json()["code"]["text"] == "requested"
    assert rule.changes[-1].before is None and rule.changes[-1].method == "POST"

    task = r.json()
    task["status"] = "accepted"
    r = await client.put(f"Task/{task['id']}", json=task, headers=FHIR_JSON)
    assert r.status_code == 200
    assert rule.changes[-1].before["status"] == "requested"
    assert (await client.get(f"Basic/{basic_id}")).json()["code"]["text"] == "accepted"

    assert (await client.delete(f"Task/{task['id']}")).status_code in (200, 204)
    assert rule.changes[-1].after is None and rule.changes[-1].method == "DELETE"
    assert rule.changes[-1].before["status"] == "accepted"


async def test_refusal_rolls_back_the_write(app: FastAPI, client: httpx.AsyncClient) -> None:
    _install(app)
    basic_id = await _basic(client)
    r = await client.post("Task", json=_task("rejected", basic_id), headers=FHIR_JSON)
    assert r.status_code == 409
    assert r.json()["resourceType"] == "OperationOutcome"
    assert (await client.get("Task")).json().get("total") == 0


async def test_refusal_fails_the_whole_transaction(app: FastAPI,
                                                   client: httpx.AsyncClient) -> None:
    _install(app)
    basic_id = await _basic(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _task("requested", basic_id), "request": {"method": "POST", "url": "Task"}},
        {"resource": _task("rejected", basic_id), "request": {"method": "POST", "url": "Task"}},
    ]}
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 409
    assert (await client.get("Task")).json().get("total") == 0
    # the first entry's rule write was rolled back with it
    assert (await client.get(f"Basic/{basic_id}")).json()["code"]["text"] == "new"
