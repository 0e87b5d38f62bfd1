"""RFC 7591 dynamic client registration (off unless FHIRPM_AUTH__REGISTRATION_ENABLED).

Open registration: anyone may register an app, which still needs a user's consent before
it sees any data, and backend (client_credentials) registration is refused here: those
clients see data without a user, so an administrator registers them (`fhirpm clients add`).
"""

from __future__ import annotations

from typing import Any

from fhirpm.auth.clients import Clients
from fhirpm.auth.errors import OAuthError
from fhirpm.errors import FhirError


def _metadata_error(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description)


async def register(clients: Clients, body: Any) -> dict[str, Any]:
    """Register the client `body` describes; the answer carries its id (and secret)."""
    if not isinstance(body, dict):
        raise _metadata_error("the body must be a JSON object of client metadata")
    grants = body.get("grant_types") or ["authorization_code", "refresh_token"]
    if not isinstance(grants, list) or "client_credentials" in grants:
        raise _metadata_error("only authorization_code and refresh_token can be registered")
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be a list of URLs")
    try:
        client, secret = await clients.add(
            name=str(body.get("client_name") or ""),
            auth_method=str(body.get("token_endpoint_auth_method") or "client_secret_basic"),
            redirect_uris=uris, launch_uri=body.get("launch_uri"),
            scope=body.get("scope"), grant_types=grants, jwks=body.get("jwks"),
            jwks_uri=body.get("jwks_uri"))
    except FhirError as err:
        raise _metadata_error(err.diagnostics) from None
    out = {k: v for k, v in client.record().items() if k != "secret_digest"}
    if secret:
        out["client_secret"] = secret
        out["client_secret_expires_at"] = 0
    return out
