"""The SMART JS client (npm `fhirclient`) in headless Chromium: a standalone launch and an
EHR launch, through the real login, consent and launch pages, across origins (the app is
served from another port, so discovery and the token request go through CORS).

Needs Debian's `chromium`, the `playwright` Python package (its own browsers are never
downloaded) and `npm ci --prefix tests/auth/browser`; skips cleanly without any of them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from fhirpm.auth.server import AuthServer
from tests.auth.conftest import PASSWORD, put_patient
from tests.auth.live import live_auth
from tests.loopback import serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BUNDLE = Path(__file__).parent / "browser/node_modules/fhirclient/build/fhir-client.js"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)
if not BUNDLE.exists():
    pytest.skip("the SMART JS client is not installed (npm ci --prefix tests/auth/browser)",
                allow_module_level=True)

STANDALONE_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
EHR_SCOPE = "launch openid fhirUser patient/*.rs"

PAGES = {
    # the app's standalone entry: the SMART client discovers the server from iss
    "/standalone.html": """<!doctype html><script src="/fhir-client.js"></script><script>
FHIR.oauth2.authorize({iss: "%(iss)s", clientId: "%(client)s", scope: "%(standalone)s",
  redirectUri: "index.html", pkceMode: "required"})
  .catch(e => document.title = "ERROR " + e);</script>""",
    # the app's EHR launch URL: iss and launch come from the query string
    "/launch.html": """<!doctype html><script src="/fhir-client.js"></script><script>
FHIR.oauth2.authorize({clientId: "%(client)s", scope: "%(ehr)s",
  redirectUri: "index.html", pkceMode: "required"})
  .catch(e => document.title = "ERROR " + e);</script>""",
    # the redirect URI: exchange the code, show the token response
    "/index.html": """<!doctype html><script src="/fhir-client.js"></script>
<pre id="result"></pre><script>
FHIR.oauth2.ready()
  .then(c => document.getElementById("result").textContent =
        JSON.stringify(c.state.tokenResponse))
  .catch(e => document.getElementById("result").textContent = "ERROR " + e);</script>""",
}


@pytest.fixture
def app_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """The SMART app's own origin (a static server); pages are filled in per test."""
    values: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/fhir-client.js":
                body, kind = BUNDLE.read_bytes(), "application/javascript"
            elif path in PAGES:
                body, kind = (PAGES[path] % values).encode(), "text/html"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield f"{url}", values


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def run_browser(chromium: Any, start: str, steps: list[tuple[str, str | None]]) -> dict:
    """Open `start` in a fresh context (its own cookies and storage), then for each
    (selector, value): fill it, or click it when value is None; return the token response
    the app shows."""
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20000)
        page.goto(start)
        for selector, value in steps:
            page.wait_for_selector(selector)
            if value is None:
                page.click(selector)
            else:
                page.fill(selector, value)
        page.wait_for_function(
            "document.getElementById('result') && "
            "document.getElementById('result').textContent.length > 0")
        text = page.text_content("#result") or ""
    finally:
        context.close()
    assert not text.startswith("ERROR"), text
    return json.loads(text)


def test_smart_js_client_standalone_and_ehr_launch(tmp_path: Path, chromium: Any,
                                                   app_server: tuple[str, dict]) -> None:
    origin, values = app_server

    async def setup(server: AuthServer) -> str:
        await server.users.add("pat", PASSWORD, fhir_user="Patient/p7")
        await server.users.add("doc", PASSWORD, fhir_user="Practitioner/pr1")
        await put_patient(server.store, "p1")
        client, _ = await server.clients.add(
            name="JS app", auth_method="none", redirect_uris=[origin + "/index.html"],
            launch_uri=origin + "/launch.html")
        return client.client_id

    with live_auth(tmp_path, setup) as (settings, client_id):
        values.update(iss=settings.fhir_base, client=client_id, standalone=STANDALONE_SCOPE,
                      ehr=EHR_SCOPE)
        sign_in = [("#username", "pat"), ("#password", PASSWORD), ("#signin", None)]
        standalone = run_browser(chromium, origin + "/standalone.html",
                                 [*sign_in, ("#allow", None)])
        assert standalone["patient"] == "p7"
        assert standalone["scope"] == STANDALONE_SCOPE
        assert standalone["refresh_token"] and standalone["id_token"]
        assert standalone["need_patient_banner"] is True

        issuer = settings.fhir_base.removesuffix("/fhir") + "/auth"
        ehr = run_browser(chromium, f"{issuer}/launch?client_id={client_id}&patient=p1", [
            ("#username", "doc"), ("#password", PASSWORD), ("#signin", None),
            ("#launch", None), ("#allow", None)])
        assert ehr["patient"] == "p1" and ehr["scope"] == EHR_SCOPE
        assert ehr["need_patient_banner"] is False
        assert "refresh_token" not in ehr
