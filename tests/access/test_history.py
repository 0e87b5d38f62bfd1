"""_history at all three levels shows a patient token only its compartment's versions; a
deletion shows when what it deleted was within reach; paging walks only visible versions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhirpm.repository import history as history_module
from tests.access.conftest import World, link


async def history(client: httpx.AsyncClient, path: str,
                  params: Any = None) -> list[tuple[str, str]]:
    """(Type/id, method) of every entry, following next links."""
    out: list[tuple[str, str]] = []
    url: str | None = path
    while url is not None:
        r = await client.get(url, params=params if url == path else None)
        assert r.status_code == 200, r.text
        body = r.json()
        out += [(e["fullUrl"].split("/fhir/")[1], e["request"]["method"])
                for e in body.get("entry", [])  # not the reads' own audit trail
                if not e["fullUrl"].split("/fhir/")[1].startswith("AuditEvent/")]
        url = link(body, "next")
    return out


def about(entries: list[tuple[str, str]], patient: str) -> list[tuple[str, str]]:
    marker = f"{patient.lower()}-"
    return [e for e in entries if e[0].split("/")[1].startswith(marker)
            or e[0] == f"Patient/{patient}"]


async def test_instance_history_of_another_patients_resource_is_404(world: World) -> None:
    assert len(await history(world.staff, "Observation/b-lab/_history")) == 2
    a = await world.patient("A")
    for path in ("Observation/b-lab/_history", "Patient/B/_history",
                 "Condition/b-gone/_history"):
        r = await a.get(path)
        assert r.status_code == 404, (path, r.text)
    assert await history(a, "Observation/a-lab/_history") == [("Observation/a-lab", "PUT")]


async def test_type_history_shows_only_the_compartment(world: World) -> None:
    staff = await history(world.staff, "Observation/_history")
    assert about(staff, "B")
    a = await world.patient("A")
    mine = await history(a, "Observation/_history")
    assert sorted(mine) == [("Observation/a-lab", "PUT"), ("Observation/a-vital", "PUT")]
    conditions = await history(a, "Condition/_history")
    assert conditions == [("Condition/a-cond", "PUT")]  # b-gone's deletion is B's


async def test_system_history_shows_only_what_the_token_reaches(world: World) -> None:
    staff = await history(world.staff, "_history")
    assert ("Condition/b-gone", "DELETE") in staff
    a = await world.patient("A")
    mine = await history(a, "_history")
    assert not about(mine, "B")
    assert set(about(mine, "A")) == {("Patient/A", "PUT"), ("Observation/a-lab", "PUT"),
                                     ("Observation/a-vital", "PUT"), ("Condition/a-cond", "PUT")}
    assert ("Practitioner/doc", "PUT") in mine  # the directory, as the scopes allow
    b = await world.patient("B")
    assert ("Condition/b-gone", "DELETE") in await history(b, "_history")
    only_obs = await world.patient("A", "patient/Observation.rs")
    assert {e[0].split("/")[0] for e in await history(only_obs, "_history")} == {"Observation"}


async def test_history_pages_walk_only_visible_versions(world: World) -> None:
    for n in range(5):  # B's changes between A's
        body = (await world.staff.get("Observation/b-vital")).json()
        body["code"]["text"] = f"v{n}"
        assert (await world.staff.put("Observation/b-vital", json=body,
                                      headers={"Content-Type": "application/fhir+json"})
                ).status_code == 200
    a = await world.patient("A")
    r = await a.get("_history", params={"_count": "1"})
    body = r.json()
    assert "total" not in body  # a count of the whole log would tell what A cannot see
    assert len(body["entry"]) == 1
    paged = await history(a, "_history", {"_count": "1"})
    assert paged == await history(a, "_history", {"_count": "50"})
    assert not about(paged, "B")


async def test_a_long_run_of_hidden_versions_ends_a_page_early(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filtering reads the log in bounded steps: a page may come back short (even empty),
    with a next link, rather than scanning the whole log for one request."""
    everything = await history(await world.patient("A"), "_history", {"_count": "50"})
    monkeypatch.setattr(history_module, "_SCAN_BATCH", 2)
    monkeypatch.setattr(history_module, "_SCAN_STEPS", 1)
    a = await world.patient("A")
    first = (await a.get("_history", params={"_count": "5"})).json()
    assert len(first.get("entry", [])) <= 2 and link(first, "next")
    assert await history(a, "_history", {"_count": "5"}) == everything
