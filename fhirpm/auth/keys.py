"""The server's signing keys: generated on first use, stored, rotatable, published as JWKS.

One document holds the ring: the current key signs, the previous one still verifies (so
tokens signed before a rotation stay valid until they expire) and both are published.
Every node reads the same document, so any node verifies any node's tokens; a node that
meets an unknown `kid` re-reads the ring once (another node may have rotated).
RSA keys: RS256 is what SMART clients and Inferno verify id_tokens with.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from joserfc.jwk import KeySet, RSAKey

from fhirpm.auth.records import KEYS, AuthDocs

RING = "ring"
ALG = "RS256"
_KEPT = 2  # current + previous


def new_key() -> dict[str, Any]:
    key = RSAKey.generate_key(2048, parameters={"alg": ALG, "use": "sig"}, auto_kid=True)
    return {"jwk": key.as_dict(private=True), "created": int(time.time())}


_imported: dict[tuple[str, str], RSAKey] = {}


def _import(jwk: dict[str, Any]) -> RSAKey:
    """Import a stored private key once per process (loading an RSA private key checks it,
    which costs tens of milliseconds; every node and test re-reads the same ring)."""
    ident = (jwk.get("kid", ""), jwk["n"])
    key = _imported.get(ident)
    if key is None:
        key = _imported[ident] = RSAKey.import_key(jwk)  # type: ignore[arg-type]
    return key


class KeyRing:
    def __init__(self, docs: AuthDocs) -> None:
        self.docs = docs
        self._keys: list[RSAKey] = []  # newest first
        self._lock = asyncio.Lock()

    async def _load(self, *, create: bool) -> None:
        record = await self.docs.get(KEYS, RING)
        if record is None and create:
            body = {"keys": [await asyncio.to_thread(new_key)]}
            if not await self.docs.create(KEYS, RING, body):
                record = await self.docs.get(KEYS, RING)  # another node won the race
            else:
                self._set(body)
                return
        if record is not None:
            self._set(record.body)

    def _set(self, body: dict[str, Any]) -> None:
        self._keys = [_import(k["jwk"]) for k in body["keys"]]

    async def signing_key(self) -> RSAKey:
        if not self._keys:
            async with self._lock:
                if not self._keys:
                    await self._load(create=True)
        return self._keys[0]

    async def verification_keys(self, kid: str | None = None) -> KeySet:
        """The published keys; reload once when `kid` is not among them."""
        await self.signing_key()
        if kid is not None and all(k.kid != kid for k in self._keys):
            await self._load(create=False)
        return KeySet(list(self._keys))

    async def jwks(self) -> dict[str, Any]:
        keys = await self.verification_keys()
        return {"keys": [k.as_dict(private=False) for k in keys]}

    async def rotate(self) -> str:
        """Make a new current key, keep the previous one; returns the new kid."""
        for _ in range(5):
            record = await self.docs.get(KEYS, RING)
            fresh = await asyncio.to_thread(new_key)
            old = record.body["keys"] if record else []
            body = {"keys": [fresh, *old][:_KEPT]}
            if record is None:
                done = await self.docs.create(KEYS, RING, body)
            else:
                done = await self.docs.swap(KEYS, record, RING, body)
            if done:
                self._set(body)
                return self._keys[0].kid or ""
        raise RuntimeError("could not rotate signing keys: the key ring kept changing")
