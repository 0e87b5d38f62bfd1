"""Rate limiting: in-process token buckets in front of the login, token and registration
endpoints, where guessing passwords, secrets or flooding client registrations happens.

A bucket holds up to `burst` tokens and refills at `per_minute`; a request takes one token
or is refused with the seconds until one is back (Retry-After). Buckets are keyed by client
IP, and login also by IP and username, so one address cannot hammer one account while a
practice behind one NAT address still logs in freely. The clock is injectable so tests
never sleep. Limits are per process: several API nodes each allow the configured rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from fhirpm.config import RateLimit

Clock = Callable[[], float]


class TokenBuckets:
    """One bucket per key; memory is bounded by forgetting buckets that are full again."""

    def __init__(self, limit: RateLimit, clock: Clock = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.burst = float(limit.burst)
        self.rate = limit.per_minute / 60.0  # tokens per second
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: Hashable) -> float:
        """Take a token: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_keys:
                self._forget(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget(self, now: float) -> None:
        """Drop buckets that have refilled (indistinguishable from new ones), then the
        oldest if an attacker keeps that many keys busy."""
        full = [k for k, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        excess = len(self._buckets) - self.max_keys // 2
        for key in list(self._buckets)[:max(0, excess)]:
            del self._buckets[key]


@dataclass(frozen=True, slots=True)
class Rule:
    """A limited endpoint: POST `path`, answered in the endpoint's own error format."""

    name: str  # metric label and log field
    path: str
    style: str  # "oauth" (JSON error) | "page" (HTML) | "fhir" (OperationOutcome)
    per_ip: TokenBuckets
    per_user: TokenBuckets | None = None  # login: also keyed by (IP, username)


class RateLimiter:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = {rule.path: rule for rule in rules}

    @property
    def clock(self) -> Clock:
        return next(iter(self.rules.values())).per_ip.clock if self.rules else time.monotonic

    @clock.setter
    def clock(self, clock: Clock) -> None:
        """Swap every bucket's clock (tests)."""
        for rule in self.rules.values():
            rule.per_ip.clock = clock
            if rule.per_user is not None:
                rule.per_user.clock = clock

    def rule_for(self, method: str, path: str) -> Rule | None:
        return self.rules.get(path) if method == "POST" else None

    @staticmethod
    def check(rule: Rule, client: str | None, username: str | None) -> int:
        """0 when the request may go on, else whole seconds to wait (Retry-After)."""
        wait = rule.per_ip.take(client or "")
        if not wait and rule.per_user is not None and username:
            wait = rule.per_user.take((client or "", username.lower()))
        return math.ceil(wait) if wait else 0


def auth_rules(settings_limits: dict[str, RateLimit], mount: str,
               clock: Clock = time.monotonic) -> list[Rule]:
    """The limited endpoints of the authorization server mounted at `mount`."""
    def buckets(name: str) -> TokenBuckets:
        return TokenBuckets(settings_limits[name], clock)

    return [
        Rule("login", f"{mount}/login", "page", buckets("login"), buckets("login_user")),
        Rule("token", f"{mount}/token", "oauth", buckets("token")),
        Rule("register", f"{mount}/register", "oauth", buckets("register")),
    ]
