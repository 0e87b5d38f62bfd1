"""Auth records kept in the store's Document API: JSON bodies, compare-and-swap revs, expiry.

One collection per record kind; this module names them and is the only place that encodes
or decodes their bodies, so auth works on any store that implements the port (SQLite now,
MongoDB later). Secrets are never stored in clear: codes, refresh tokens and client secrets
are keyed or kept by their SHA-256 (they are long random values, so a fast hash suffices).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from fhirpm.storage.port import ResourceStore, VersionConflict

CLIENTS = "auth.clients"
USERS = "auth.users"
LOCKOUTS = "auth.lockouts"
SESSIONS = "auth.sessions"
REQUESTS = "auth.requests"  # authorization requests waiting for login/consent
CODES = "auth.codes"
LAUNCHES = "auth.launches"
GRANTS = "auth.grants"  # one per authorization: its refresh family and access tokens
REFRESH = "auth.refresh"
REVOKED = "auth.revoked"  # access token ids revoked before their expiry
OWNERS = "auth.owners"  # "client/<id>/<grant>", "user/<name>/<grant>": grants by owner
JTIS = "auth.jtis"  # client assertion ids seen (replay cache)
KEYS = "auth.keys"


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded document: its body and the rev to compare-and-swap against."""

    body: dict[str, Any]
    rev: int
    expires_at: int | None = None


class AuthDocs:
    """JSON documents over a ResourceStore's Document API."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    async def get(self, collection: str, key: str) -> Record | None:
        doc = await self.store.doc_get(collection, key)
        if doc is None:
            return None
        return Record(orjson.loads(doc.body), doc.rev, doc.expires_at)

    async def put(self, collection: str, key: str, body: dict[str, Any], *,
                  expected_rev: int | None = None, expires_at: int | None = None) -> int:
        return await self.store.doc_put(collection, key, orjson.dumps(body),
                                        expected_rev=expected_rev, expires_at=expires_at)

    async def create(self, collection: str, key: str, body: dict[str, Any], *,
                     expires_at: int | None = None) -> bool:
        """Write only if absent; False when the key is already taken."""
        try:
            await self.put(collection, key, body, expected_rev=0, expires_at=expires_at)
        except VersionConflict:
            return False
        return True

    async def swap(self, collection: str, record: Record, key: str, body: dict[str, Any], *,
                   expires_at: int | None = None) -> bool:
        """Replace `record` if nobody changed it since it was read; False if someone did."""
        try:
            await self.put(collection, key, body, expected_rev=record.rev, expires_at=expires_at)
        except VersionConflict:
            return False
        return True

    async def delete(self, collection: str, key: str) -> bool:
        return await self.store.doc_delete(collection, key)

    async def list(self, collection: str, prefix: str = "", limit: int = 1000) -> list[Record]:
        docs = await self.store.doc_list(collection, prefix, limit)
        return [Record(orjson.loads(d.body), d.rev, d.expires_at) for d in docs]
