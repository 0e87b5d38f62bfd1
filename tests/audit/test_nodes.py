"""One chain per store, however many API nodes write to it: two apps on the same store
(SQLite file, MongoDB database) writing and reading at once leave one contiguous chain
that verifies, with every request's events in it (once each node's journal is sealed in:
fhirpm.audit.journal)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.audit import maintenance
from fhirpm.audit.chain import link_of
from fhirpm.config import Settings
from tests.audit.conftest import PATIENT, chain_events, http_client, recorder
from tests.bearer import staff_headers


async def test_two_nodes_share_one_chain(store_settings: Settings) -> None:
    nodes: list[FastAPI] = [create_app(store_settings), create_app(store_settings)]
    async with nodes[0].state.jobs.held(), nodes[1].state.jobs.held(), \
            nodes[0].router.lifespan_context(nodes[0]), \
            nodes[1].router.lifespan_context(nodes[1]):
        clients = [http_client(node, await staff_headers(node)) for node in nodes]

        async def work(n: int) -> list[int]:
            client = clients[n % 2]
            created = await client.post("Patient", json=PATIENT)
            read = await client.get(f"Patient/{created.json()['id']}")
            return [created.status_code, read.status_code]

        statuses = await asyncio.gather(*(work(n) for n in range(12)))
        for client in clients:
            await client.aclose()
        assert statuses == [[201, 200]] * 12
        for node in nodes:  # each node's journal (a node's reads see their own at once)
            await recorder(node).trail.settle()
        events = await chain_events(nodes[0])
        assert [link_of(e).seq for e in events] == list(range(1, len(events) + 1))  # type: ignore[union-attr]
        kinds = [e["subtype"][0]["code"] for e in events]
        assert kinds.count("create") == 12 and kinds.count("read") == 12
        assert (await maintenance.verify(recorder(nodes[1]).trail)).ok
