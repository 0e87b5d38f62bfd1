"""A conditional PUT inside a transaction whose criteria value holds URL metacharacters."""

from __future__ import annotations

import httpx

from tests.conftest import FHIR_JSON


def _transaction(value: str, family: str) -> dict:
    # a urn:uuid fullUrl makes the server resolve the criteria up front (others may
    # reference the entry), which is the path that re-encodes them
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:5d0a7e3c-9a39-4f7e-8a52-0f8a3c1d2b11",
        "resource": {"resourceType": "Patient", "name": [{"family": family}],
                     "identifier": [{"system": "urn:mrn", "value": value}]},
        "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|" +
                    value.replace("%", "%25").replace("&", "%26").replace("+", "%2B")},
    }]}


async def test_conditional_put_criteria_keep_metacharacters(client: httpx.AsyncClient) -> None:
    value = "A&B+C%D"
    first = await client.post("", json=_transaction(value, "One"), headers=FHIR_JSON)
    assert first.status_code == 200, first.text
    second = await client.post("", json=_transaction(value, "Two"), headers=FHIR_JSON)
    assert second.status_code == 200, second.text
    found = (await client.get("Patient", params={"identifier": f"urn:mrn|{value}"})).json()
    assert [e["resource"]["name"][0]["family"] for e in found["entry"]] == ["Two"]
