"""The login, picker and consent pages: CSRF, lockout, browser binding, session fixation,
escaping, open redirects."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.auth.conftest import (
    ISSUER,
    PASSWORD,
    Browser,
    Env,
    auth_settings,
    hidden,
    make_env,
    pkce,
    query_of,
)


@pytest.fixture
async def app_id(env: Env) -> str:
    await env.server.users.add("pat", PASSWORD, fhir_user="Patient/p7")
    await env.server.users.add("doc", PASSWORD, fhir_user="Practitioner/pr1")
    return await env.public_app(name="<script>alert(1)</script> Viewer")


async def login_page(env: Env, app_id: str, browser: Browser) -> object:
    _, challenge = pkce()
    return await browser.follow(await browser.authorize(app_id, "patient/*.rs",
                                                        challenge=challenge))


async def test_login_requires_the_session_csrf_token(env: Env, app_id: str) -> None:
    browser = Browser(env.http)
    page = await login_page(env, app_id, browser)
    r = await browser.post(ISSUER + "/login", {
        "csrf": "forged", "next": hidden(page.text, "next"),  # type: ignore[attr-defined]
        "username": "pat", "password": PASSWORD})
    assert r.status_code == 400 and "expired" in r.text
    # another browser's (valid) token does not work with this browser's cookie either
    other = Browser(env.http)
    other_page = await login_page(env, app_id, other)
    r = await browser.post(ISSUER + "/login", {
        "csrf": hidden(other_page.text, "csrf"),  # type: ignore[attr-defined]
        "next": hidden(page.text, "next"),  # type: ignore[attr-defined]
        "username": "pat", "password": PASSWORD})
    assert r.status_code == 400


async def test_wrong_password_then_lockout(tmp_path: Path) -> None:
    async with make_env(auth_settings(tmp_path, lockout_attempts=3)) as env:
        await env.server.users.add("pat", PASSWORD, fhir_user="Patient/p7")
        app_id = await env.public_app()
        browser = Browser(env.http)
        page = await login_page(env, app_id, browser)
        for _ in range(3):
            page = await browser.login(page, "pat", "wrong password")  # type: ignore[arg-type]
            assert page.status_code == 401 and 'id="error"' in page.text
        locked = await browser.login(page, "pat", PASSWORD)
        assert locked.status_code == 401 and "locked" in locked.text


async def test_unknown_user_is_told_the_same_as_a_wrong_password(env: Env,
                                                                 app_id: str) -> None:
    browser = Browser(env.http)
    page = await login_page(env, app_id, browser)
    wrong = await browser.login(page, "pat", "wrong password")  # type: ignore[arg-type]
    unknown = await browser.login(wrong, "nobody", "wrong password")
    assert "Unknown username or wrong password" in wrong.text
    assert "Unknown username or wrong password" in unknown.text


async def test_login_replaces_the_session_id(env: Env, app_id: str) -> None:
    browser = Browser(env.http)
    page = await login_page(env, app_id, browser)
    before = browser.cookies.get("fhirpm_auth")
    await browser.login(page, "pat")  # type: ignore[arg-type]
    after = browser.cookies.get("fhirpm_auth")
    assert before and after and before != after
    assert await env.server.sessions.load(before) is None


async def test_pending_request_is_bound_to_its_browser(env: Env, app_id: str) -> None:
    victim = Browser(env.http)
    page = await login_page(env, app_id, victim)
    consent = await victim.login(page, "pat")  # type: ignore[arg-type]
    txn = hidden(consent.text, "txn")
    attacker = Browser(env.http)
    await login_page(env, app_id, attacker)
    r = await attacker.get(f"{ISSUER}/consent?txn={txn}")
    assert r.status_code == 400 and "another browser" in r.text


async def test_app_name_is_escaped(env: Env, app_id: str) -> None:
    browser = Browser(env.http)
    page = await login_page(env, app_id, browser)
    consent = await browser.login(page, "pat")  # type: ignore[arg-type]
    assert "<script>" not in consent.text and "&lt;script&gt;" in consent.text
    assert consent.headers["content-security-policy"].startswith("default-src 'none'")
    assert consent.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("target", ["https://evil.example", "//evil.example", "/\\evil", ""])
async def test_login_next_cannot_leave_the_server(env: Env, target: str) -> None:
    r = await env.http.get("/auth/login", params={"next": target})
    assert r.status_code == 400 and "location" not in r.headers


async def test_patient_picker(env: Env, app_id: str) -> None:
    await env.add_patient("p1", "Alpha")
    await env.add_patient("p2", "Beta")
    browser = Browser(env.http)
    _, challenge = pkce()
    r = await browser.follow(await browser.authorize(app_id, "launch/patient patient/*.rs",
                                                     challenge=challenge))
    picker = await browser.login(r, "doc")
    assert "Choose a patient" in picker.text
    assert "Alpha, Pat" in picker.text and "Beta, Pat" in picker.text
    missing = await browser.post(ISSUER + "/patient", {
        "csrf": hidden(picker.text, "csrf"), "txn": hidden(picker.text, "txn"),
        "patient_id": "nope"})
    assert missing.status_code == 400 and "no patient" in missing.text
    consent = await browser.post(ISSUER + "/patient", {
        "csrf": hidden(picker.text, "csrf"), "txn": hidden(picker.text, "txn"),
        "patient": "p1"})
    consent = await browser.follow(consent)
    assert "Patient/p1</strong>" in consent.text


async def test_patient_user_cannot_use_the_picker(env: Env, app_id: str) -> None:
    browser = Browser(env.http)
    page = await login_page(env, app_id, browser)
    consent = await browser.login(page, "pat")  # type: ignore[arg-type]
    r = await browser.post(ISSUER + "/patient", {
        "csrf": hidden(consent.text, "csrf"), "txn": hidden(consent.text, "txn"),
        "patient_id": "p1"})
    assert r.status_code == 400 and "Only practitioners" in r.text


async def test_user_without_patient_link_is_denied_patient_scopes(env: Env) -> None:
    await env.server.users.add("kin", PASSWORD, fhir_user="RelatedPerson/r1")
    app_id = await env.public_app()
    browser = Browser(env.http)
    page = await login_page(env, app_id, browser)
    r = await browser.login(page, "kin")  # type: ignore[arg-type]
    assert r.status_code == 302
    assert query_of(r.headers["location"])["error"] == "access_denied"


async def test_expired_or_unknown_request(env: Env) -> None:
    r = await env.http.get("/auth/consent?txn=unknown")
    assert r.status_code == 400 and "expired" in r.text
    posted = await env.http.post("/auth/consent", data={"txn": "x", "csrf": "y"})
    assert posted.status_code == 400
    not_a_form = await env.http.post("/auth/consent", json={"txn": "x"})
    assert not_a_form.status_code == 400
