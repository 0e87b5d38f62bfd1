"""A real SMART client: the python `fhirclient` package through a standalone launch against
uvicorn on 127.0.0.1 (it speaks `requests`, so it needs real sockets).

fhirclient discovers endpoints only from the CapabilityStatement's `oauth-uris` extension;
the metadata route here serves `AuthServer.security()`, the block the FHIR
CapabilityStatement embeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from fhirpm.auth.server import AuthServer
from fhirpm.config import Settings
from tests.auth.conftest import APP_REDIRECT, PASSWORD, hidden
from tests.auth.live import live_auth

fhirclient = pytest.importorskip("fhirclient.client", reason="python fhirclient not installed")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """The auth server on a real loopback socket; yields (settings, client_id)."""
    async def setup(server: AuthServer) -> str:
        await server.users.add("pat", PASSWORD, fhir_user="Patient/p7")
        client, _ = await server.clients.add(name="fhirclient app", auth_method="none",
                                             redirect_uris=[APP_REDIRECT])
        return client.client_id

    with live_auth(tmp_path, setup) as running:
        yield running


def browse_to_callback(http: httpx.Client, url: str) -> str:
    """Sign in and consent like a person; return the app callback URL."""
    response = http.get(url)
    while True:
        if response.status_code in (302, 303):
            location = urljoin(str(response.url), response.headers["location"])
            if location.startswith(APP_REDIRECT):
                return location
            response = http.get(location)
        elif 'name="password"' in response.text:
            response = http.post(str(response.url).split("?")[0], data={
                "csrf": hidden(response.text, "csrf"), "next": hidden(response.text, "next"),
                "username": "pat", "password": PASSWORD})
        elif 'name="decision"' in response.text:
            response = http.post(str(response.url).split("?")[0], data={
                "csrf": hidden(response.text, "csrf"), "txn": hidden(response.text, "txn"),
                "decision": "allow", "scope": [
                    s for s in ("launch/patient", "openid", "fhirUser", "offline_access",
                                "patient/*.read") if s in response.text]})
        else:
            raise AssertionError(f"unexpected page {response.status_code}: {response.text}")


def test_python_fhirclient_standalone_launch(served: tuple[Settings, str]) -> None:
    settings, client_id = served
    smart = fhirclient.FHIRClient(settings={
        "app_id": client_id, "api_base": settings.fhir_base, "redirect_uri": APP_REDIRECT,
        "scope": "launch/patient openid fhirUser offline_access patient/*.read"})
    authorize_url = smart.authorize_url  # discovery through /metadata, PKCE S256, state
    assert authorize_url.startswith(settings.fhir_base.removesuffix("/fhir") + "/auth/")
    with httpx.Client(timeout=10) as http:
        callback = browse_to_callback(http, authorize_url)
        smart.handle_callback(callback)  # checks state, exchanges code + verifier
        assert smart.patient_id == "p7"
        first = smart.server.auth.access_token
        assert first and smart.server.auth.refresh_token
        smart.reauthorize()  # refresh_token grant
        second = smart.server.auth.access_token
        assert second and second != first
        info = http.post(settings.fhir_base.removesuffix("/fhir") + "/auth/introspect",
                         data={"token": second},
                         headers={"Authorization": f"Bearer {second}"}).json()
    assert info["active"] is True and info["patient"] == "p7"
    assert info["client_id"] == client_id and "patient/*.read" in info["scope"]
