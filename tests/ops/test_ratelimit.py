"""Rate limits on the authorization endpoints: they trip, answer in the endpoint's own
format with Retry-After, and recover as the (hand-moved) clock advances."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from fhirpm.config import RateLimit
from fhirpm.ops.ratelimit import TokenBuckets
from tests.ops.conftest import ORIGIN, Clock, ops_settings, running


def test_token_bucket_allows_a_burst_then_the_refill_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(RateLimit(burst=3, per_minute=6), clock)  # one token per 10 s
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 10.0
    assert buckets.take("b") == 0.0  # keys are independent
    clock.advance(4)
    assert buckets.take("a") == pytest.approx(6.0)
    clock.advance(6)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == 10.0
    clock.advance(3600)  # refills to the burst, not beyond
    assert [buckets.take("a") for _ in range(4)][-1] == 10.0


def test_token_buckets_forget_idle_keys_to_bound_memory() -> None:
    clock = Clock()
    buckets = TokenBuckets(RateLimit(burst=1, per_minute=60), clock, max_keys=100)
    for n in range(100):
        buckets.take(n)
    clock.advance(1)  # every bucket has refilled: they are indistinguishable from new ones
    buckets.take("new")
    assert len(buckets) <= 50
    for n in range(1000):  # an attacker cycling keys within a second stays bounded too
        buckets.take(("x", n))
    assert len(buckets) <= 101


async def test_token_endpoint_trips_with_an_oauth_error_and_recovers(tmp_path: Path) -> None:
    clock = Clock()
    settings = ops_settings(tmp_path, token_limit=RateLimit(burst=2, per_minute=6))
    form = {"grant_type": "client_credentials"}
    async with running(settings) as (app, client):
        app.state.ops.limiter.clock = clock
        first = [await client.post("/auth/token", data=form) for _ in range(2)]
        refused = await client.post("/auth/token", data=form)
        transport = httpx.ASGITransport(app=app, client=("192.0.2.50", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as other:
            elsewhere = await other.post("/auth/token", data=form)
        clock.advance(10)
        again = await client.post("/auth/token", data=form)
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in first] == [401, 401]  # reached the endpoint (no client)
    assert refused.status_code == 429
    assert refused.json()["error"] == "temporarily_unavailable"
    assert refused.headers["retry-after"] == "10"
    assert refused.headers["cache-control"] == "no-store"
    assert elsewhere.status_code == 401  # another address has its own bucket
    assert again.status_code == 401  # recovered
    assert 'fhirpm_rate_limited_total{limit="token"} 1' in metrics


async def test_login_is_limited_per_address_and_username(tmp_path: Path) -> None:
    clock = Clock()
    settings = ops_settings(tmp_path, login_limit=RateLimit(burst=10, per_minute=10),
                            login_user_limit=RateLimit(burst=2, per_minute=2))
    async with running(settings) as (app, client):
        app.state.ops.limiter.clock = clock
        await app.state.auth.users.add("drlee", "correct horse battery")
        page = await client.get("/auth/login", params={"next": "/auth/authorize"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)

        async def login(username: str, password: str = "wrong"):
            return await client.post("/auth/login", data={
                "username": username, "password": password, "csrf": csrf,
                "next": "/auth/authorize"})

        tries = [await login("drlee") for _ in range(2)]
        blocked = await login("DrLee")  # usernames compare case-insensitively here
        other_user = await login("someone")
        clock.advance(30)
        right = await login("drlee", "correct horse battery")
    assert [t.status_code for t in tries] == [401, 401]
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "30"
    assert blocked.headers["content-type"].startswith("text/html")
    assert "Too many sign-in attempts" in blocked.text
    assert blocked.headers.get_list("x-frame-options") == ["DENY"]
    assert other_user.status_code == 401  # the address itself is still under its limit
    assert right.status_code == 303  # after the wait, the form body reached the endpoint


async def test_registration_is_limited(tmp_path: Path) -> None:
    clock = Clock()
    settings = ops_settings(tmp_path, register_limit=RateLimit(burst=1, per_minute=1),
                            auth={"registration_enabled": True})
    app_meta = {"client_name": "x", "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "none"}
    async with running(settings) as (app, client):
        app.state.ops.limiter.clock = clock
        made = await client.post("/auth/register", json=app_meta)
        refused = await client.post("/auth/register", json=app_meta)
    assert made.status_code == 201
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"


async def test_limits_can_be_switched_off(tmp_path: Path) -> None:
    settings = ops_settings(tmp_path, rate_limits=False,
                            token_limit=RateLimit(burst=1, per_minute=1))
    async with running(settings) as (app, client):
        statuses = {(await client.post("/auth/token", data={"grant_type": "x"})).status_code
                    for _ in range(3)}
    assert app.state.ops.limiter is None and statuses == {400}
