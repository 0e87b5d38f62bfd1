"""Real bearer tokens for tests: minted by the app's own authorization server
(`fhirpm.auth.tokens`: a signed JWT and its grant in the store) and verified by the real
verifier on every request, so access control runs in every API test.

One signing key serves the whole run (generating RSA keys is slow); it is stored in each
test's store before the server signs anything, as a key ring found on first start.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import FastAPI

from fhirpm.auth.keys import RING, new_key
from fhirpm.auth.records import KEYS
from fhirpm.auth.server import AuthServer
from fhirpm.auth.tokens import Grant

# What the shared `client` fixture holds: a staff member with every user permission.
STAFF_SCOPE = "user/*.cruds"
STAFF_USER = "Practitioner/staff"


@functools.cache
def shared_key() -> dict[str, Any]:
    return new_key()


async def use_shared_key(server: AuthServer) -> None:
    if await server.docs.get(KEYS, RING) is None:
        await server.docs.put(KEYS, RING, {"keys": [shared_key()]})


async def mint(server: AuthServer, scope: str, *, patient: str | None = None,
               fhir_user: str | None = None, sub: str = "tester",
               client_id: str = "fhirpm-tests") -> str:
    """An access token for `scope` (and a launch `patient`), issued as a grant would be."""
    await use_shared_key(server)
    grant = Grant(client_id=client_id, sub=sub, scope=scope, fhir_user=fhir_user,
                  patient=patient)
    return (await server.tokens.issue(grant))["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def staff_headers(app: FastAPI) -> dict[str, str]:
    """The Authorization header of a staff token; none when authorization is off."""
    server = app.state.auth
    if server is None:
        return {}
    return bearer(await mint(server, STAFF_SCOPE, fhir_user=STAFF_USER, sub="staff"))
