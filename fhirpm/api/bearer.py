"""Who is calling: an `Authorization: Bearer` header in, the caller out (a Principal, or
an `Anonymous` carrying the 401 its requests will get; public endpoints ignore it).

Checking a token's signature costs about half a millisecond, more than a read by id. So
each process remembers the tokens it verified, keyed by the Authorization header exactly as
sent, until they expire: a known token then costs one dict lookup (hashing the header
string; a SHA-256 of it cost more than the rest of this check). The process holds its
signing keys anyway, so keeping the tokens it accepted in memory exposes nothing new.
Revocation is re-checked against the store's revocation list when a remembered token was
last checked more than `recheck` seconds ago (`FHIRPM_AUTH__TOKEN_RECHECK_SECONDS`,
default 5): a revoked token keeps working for at most that long on each node. Failures are
never remembered, so a token becomes usable the moment it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fhirpm.auth.errors import invalid_token
from fhirpm.auth.principal import Principal
from fhirpm.auth.verify import TokenVerifier, bearer_token
from fhirpm.errors import FhirError
from fhirpm.repository.access import Anonymous


class Callers:
    def __init__(self, verifier: TokenVerifier, *, recheck: float = 5.0,
                 limit: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.verifier = verifier
        self.recheck = recheck
        self.limit = limit
        self.clock = clock
        self._known: dict[str, tuple[Principal, float]] = {}  # header -> (who, checked at)

    async def caller(self, authorization: str | None) -> Principal | Anonymous:
        known = self._known.get(authorization) if authorization else None
        if known is not None and authorization is not None:
            principal, checked = known
            if principal.exp > time.time():
                if self.clock() - checked < self.recheck:
                    return principal
                return await self._recheck(authorization, principal)
            del self._known[authorization]  # expired: the verifier says so, with its clock leeway
        try:
            principal = await self.verifier.verify(bearer_token(authorization))
        except FhirError as err:
            return Anonymous(err)
        assert authorization is not None  # bearer_token refuses a missing header
        self._remember(authorization, principal)
        return principal

    async def _recheck(self, key: str, principal: Principal) -> Principal | Anonymous:
        if await self.verifier.tokens.is_revoked(principal.token_id):
            self._known.pop(key, None)
            return Anonymous(invalid_token("the token was revoked"))
        self._known[key] = (principal, self.clock())
        return principal

    def _remember(self, key: str, principal: Principal) -> None:
        if len(self._known) >= self.limit:
            now = time.time()
            for old in [k for k, (p, _) in self._known.items() if p.exp <= now]:
                del self._known[old]
            while len(self._known) >= self.limit:  # still full: forget the oldest
                del self._known[next(iter(self._known))]
        self._known[key] = (principal, self.clock())
