"""Junk at every endpoint: always a 4xx answer in the endpoint's own format, never a 500."""

from __future__ import annotations

import base64

import pytest

from tests.auth.conftest import Env

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JUNK_JWTS = [
    "", ".", "..", "a.b.c", "\u00e9.\u00e9.\u00e9", b64(b"[]") + "." + b64(b"[]") + ".x",
    b64(b'{"alg":"none"}') + "." + b64(b'{"iss":"x"}') + ".",
    b64(b'{"alg":"RS384","kid":7}') + "." + b64(b'{"iss":["x"],"exp":"soon"}') + ".sig",
    b64(b'{"alg":"ES384"}') + "." + b64(b'"just a string"') + ".sig",
    "x" * 20000,
]


@pytest.mark.parametrize("assertion", JUNK_JWTS)
async def test_junk_client_assertions(env: Env, assertion: str) -> None:
    r = await env.http.post("/auth/token", data={
        "grant_type": "client_credentials", "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert 400 <= r.status_code < 500 and "error" in r.json()


@pytest.mark.parametrize("token", JUNK_JWTS)
async def test_junk_tokens_at_introspection_and_revocation(env: Env, token: str) -> None:
    client_id, secret = await env.confidential_app()
    r = await env.http.post("/auth/introspect", data={"token": token},
                            auth=(client_id, secret))
    revoked = await env.http.post("/auth/revoke", data={"token": token},
                                  auth=(client_id, secret))
    if token:
        assert r.status_code == 200 and r.json() == {"active": False}
        assert revoked.status_code == 200
    else:  # a missing token is a malformed request
        assert r.status_code == revoked.status_code == 400
    sent = token if token.isascii() else "x"  # headers are ASCII on the wire
    bearer = await env.http.post("/auth/introspect", data={"token": "x"},
                                 headers={"Authorization": "Bearer " + sent})
    assert bearer.status_code == 401


JUNK_FORMS = [
    b"", b"\xff\xfe", b"a=%zz&b", b"=&=&&", b"grant_type=" + b"x" * 70000,
    b"&".join(b"k%d=v" % i for i in range(500)),
]
JUNK_QUERIES = [
    "", "client_id=", "client_id=%00", "client_id=" + "x" * 5000, "txn=" + "y" * 500,
    "next=/%0d%0aSet-Cookie:x=1", "client_id=a&redirect_uri=\u2603",
]


@pytest.mark.parametrize("path", ["/auth/token", "/auth/introspect", "/auth/revoke",
                                  "/auth/login", "/auth/consent", "/auth/patient",
                                  "/auth/authorize", "/auth/launch"])
async def test_junk_forms(env: Env, path: str) -> None:
    for body in JUNK_FORMS:
        r = await env.http.post(path, content=body, headers=FORM)
        assert 400 <= r.status_code < 500, (body[:40], r.status_code, r.text[:200])


@pytest.mark.parametrize("path", ["/auth/authorize", "/auth/continue", "/auth/consent",
                                  "/auth/patient", "/auth/login", "/auth/launch"])
async def test_junk_queries(env: Env, path: str) -> None:
    for query in JUNK_QUERIES:
        r = await env.http.get(f"{path}?{query}")
        assert r.status_code < 500, (query[:40], r.status_code, r.text[:200])
        assert "set-cookie: x" not in str(r.headers).lower()


async def test_junk_authorization_headers(env: Env) -> None:
    for header in ("Basic", "Basic " + b64(b"no-colon"), "Basic " + b64(b"\xff:\xfe"),
                   "Bearer", "Digest x", "Basic " + "=" * 10):
        r = await env.http.post("/auth/token", data={"grant_type": "authorization_code"},
                                headers={"Authorization": header})
        assert 400 <= r.status_code < 500, (header, r.status_code, r.text)
