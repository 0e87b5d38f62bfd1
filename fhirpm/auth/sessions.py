"""Browser sessions at the authorization server's pages, and their CSRF tokens.

A session is a random id in an HttpOnly, SameSite=Lax cookie, pointing at a document that
holds the logged-in user and a CSRF token (synchroniser pattern: every form carries the
token, every POST must present the session's). Logging in replaces the session id, so a
session id planted before login is worthless afterwards (session fixation).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from fhirpm.auth.records import SESSIONS, AuthDocs, digest, random_token

COOKIE = "fhirpm_auth"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    csrf: str
    browser: str  # stays the same across login: pending authorizations are bound to it
    user: str | None = None
    auth_time: int | None = None
    signed_in_at: float | None = None  # auth_time, precisely (fhirpm.auth.users.signed_in)

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class Sessions:
    def __init__(self, docs: AuthDocs, lifetime: int) -> None:
        self.docs = docs
        self.lifetime = lifetime

    async def load(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 100:
            return None
        record = await self.docs.get(SESSIONS, digest(sid))
        if record is None:
            return None
        body = record.body
        return Session(sid, body["csrf"], body["browser"], body.get("user"),
                       body.get("auth_time"), body.get("signed_in_at"))

    async def start(self, user: str | None = None, browser: str | None = None) -> Session:
        at = time.time()
        now = int(at)
        session = Session(random_token(24), random_token(24), browser or random_token(16),
                          user, now if user else None, at if user else None)
        await self.docs.put(SESSIONS, digest(session.sid),
                            {"csrf": session.csrf, "browser": session.browser, "user": user,
                             "auth_time": session.auth_time,
                             "signed_in_at": session.signed_in_at},
                            expected_rev=0, expires_at=now + self.lifetime)
        return session

    async def login(self, old: Session | None, username: str) -> Session:
        if old is not None:
            await self.docs.delete(SESSIONS, digest(old.sid))
        return await self.start(username, old.browser if old else None)

    async def end(self, session: Session) -> None:
        await self.docs.delete(SESSIONS, digest(session.sid))
