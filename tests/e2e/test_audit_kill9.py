"""The audit trail survives SIGKILL: every read the server answered has its AuditEvent once
the server is back, exactly once, in a chain that verifies.

A real `fhirpm serve` (authorization on, its audit sealer process beside it) answers reads,
each with its own X-Request-ID; their records are in the audit journal (some sealed into the
chain by the sealer already, some not) when the server is killed. After a restart on the
same file the trail holds one `read` event per answered request and `fhirpm audit verify`
passes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx

from bench.server import ROOT, ServerProcess, server_env

READS = 300
CONCURRENT = 16
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


async def answered_reads(server: ServerProcess) -> list[str]:
    """The request ids of READS reads of one Patient, all answered 200."""
    async with httpx.AsyncClient(base_url=server.base_url + "/fhir", timeout=30,
                                 headers={**FHIR_JSON, **server.auth_headers}) as client:
        created = await client.put("Patient/p1", json={"resourceType": "Patient", "id": "p1"})
        assert created.status_code == 201, created.text
        ids = [f"kill9-read-{n}" for n in range(READS)]
        gate = asyncio.Semaphore(CONCURRENT)

        async def read(request_id: str) -> None:
            async with gate:
                r = await client.get("Patient/p1", headers={"X-Request-ID": request_id})
                assert r.status_code == 200, r.text
        await asyncio.gather(*(read(i) for i in ids))
        return ids


async def recorded_reads(server: ServerProcess) -> list[str]:
    """The request ids of the `read` events about Patient/p1, over every page."""
    found: list[str] = []
    async with httpx.AsyncClient(timeout=30, headers={**FHIR_JSON, **server.auth_headers}
                                 ) as client:
        url: str | None = f"{server.base_url}/fhir/AuditEvent?entity=Patient/p1&_count=200"
        while url:
            page = (await client.get(url)).json()
            for entry in page.get("entry", []):
                event = entry["resource"]
                if event["subtype"][0]["code"] != "read":
                    continue
                found += [e["what"]["identifier"]["value"] for e in event["entity"]
                          if e.get("type", {}).get("code") == "XrequestId"]
            url = next((link["url"] for link in page.get("link", [])
                        if link["relation"] == "next"), None)
    return found


def test_kill_9_keeps_the_record_of_every_answered_read(store_url: str,
                                                        tmp_path: Path) -> None:
    server = ServerProcess.fhirpm(store_url, tmp_path / "first.log", auth=True).start()
    try:
        ids = asyncio.run(answered_reads(server))
    finally:
        server.kill()
    with ServerProcess.fhirpm(store_url, tmp_path / "second.log", auth=True) as restarted:
        found = asyncio.run(recorded_reads(restarted))
    assert sorted(found) == sorted(ids)  # every answered read, once
    verify = subprocess.run([sys.executable, "-m", "fhirpm.cli", "audit", "verify",
                             "--store-url", store_url], cwd=ROOT, env=server_env(),
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit chain OK" in verify.stdout
