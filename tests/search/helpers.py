"""Small HTTP helpers for search tests: load resources with known ids, search, read ids."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import FHIR_JSON


async def put_all(client: httpx.AsyncClient, resources: list[dict[str, Any]]) -> None:
    """Create each resource with its own id (update-as-create)."""
    for resource in resources:
        r = await client.put(f"{resource['resourceType']}/{resource['id']}", json=resource,
                             headers=FHIR_JSON)
        assert r.status_code in (200, 201), r.text


async def search(client: httpx.AsyncClient, path: str, params: Any = None,
                 headers: dict[str, str] | None = None, status: int = 200) -> dict[str, Any]:
    r = await client.get(path, params=params, headers=headers)
    assert r.status_code == status, r.text
    return r.json()


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e["search"]["mode"] == mode]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == relation), None)


def outcome(bundle: dict[str, Any]) -> list[str]:
    """Diagnostics of the OperationOutcome entry (ignored parameters), if any."""
    return [i["diagnostics"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
            for i in e["resource"]["issue"]]
