"""What the authorization server publishes: its endpoint URLs, SMART configuration, OpenID
configuration, the CapabilityStatement security block and the SMART style.

`Urls` is the one place that knows where each endpoint lives: the routes are mounted under
/auth on this app, and `issuer` is their public URL (by default the FHIR base's sibling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirpm.auth.assertions import ALGORITHMS
from fhirpm.auth.keys import ALG
from fhirpm.auth.scopes import supported_scopes
from fhirpm.config import Settings

MOUNT = "/auth"

CAPABILITIES = [
    "launch-ehr", "launch-standalone", "authorize-post",
    "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "sso-openid-connect", "context-banner", "context-style",
    "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
    "permission-offline", "permission-online", "permission-patient", "permission-user",
    "permission-v1", "permission-v2",
]

STYLE = {  # SMART "context-style": hints an embedded app may use to look like the EHR
    "color_background": "#f6f7f9", "color_error": "#b00020", "color_highlight": "#1f6feb",
    "color_modal_backdrop": "rgba(0,0,0,0.4)", "color_success": "#1a7f37",
    "color_text": "#1f2328", "dim_border_radius": "6px", "dim_font_size": "14px",
    "dim_spacing_size": "16px", "font_family_body": "system-ui, sans-serif",
    "font_family_heading": "system-ui, sans-serif",
}


@dataclass(frozen=True, slots=True)
class Urls:
    issuer: str
    fhir_base: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Urls:
        base = settings.fhir_base
        issuer = settings.auth.issuer
        if not issuer:
            root = base[: -len("/fhir")] if base.endswith("/fhir") else base
            issuer = root + MOUNT
        return cls(issuer.rstrip("/"), base)

    @property
    def authorize(self) -> str:
        return self.issuer + "/authorize"

    @property
    def token(self) -> str:
        return self.issuer + "/token"

    @property
    def introspect(self) -> str:
        return self.issuer + "/introspect"

    @property
    def revoke(self) -> str:
        return self.issuer + "/revoke"

    @property
    def register(self) -> str:
        return self.issuer + "/register"

    @property
    def jwks(self) -> str:
        return self.issuer + "/jwks"

    @property
    def style(self) -> str:
        return self.issuer + "/smart-style.json"


def smart_configuration(urls: Urls, *, registration: bool) -> dict[str, Any]:
    """[base]/.well-known/smart-configuration (SMART App Launch 2.x)."""
    out: dict[str, Any] = {
        "issuer": urls.issuer,
        "jwks_uri": urls.jwks,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "introspection_endpoint": urls.introspect,
        "revocation_endpoint": urls.revoke,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": supported_scopes(),
        "capabilities": CAPABILITIES,
    }
    if registration:
        out["registration_endpoint"] = urls.register
    return out


def openid_configuration(urls: Urls, *, registration: bool) -> dict[str, Any]:
    """{issuer}/.well-known/openid-configuration (OpenID Connect Discovery 1.0)."""
    out: dict[str, Any] = {
        "issuer": urls.issuer,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "jwks_uri": urls.jwks,
        "introspection_endpoint": urls.introspect,
        "revocation_endpoint": urls.revoke,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG],
        "scopes_supported": supported_scopes(),
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce",
                             "fhirUser"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
    }
    if registration:
        out["registration_endpoint"] = urls.register
    return out


def capability_security(urls: Urls, *, registration: bool) -> dict[str, Any]:
    """CapabilityStatement.rest[0].security: the `oauth-uris` extension (the only way the
    python fhirclient discovers endpoints) and the SMART-on-FHIR service coding."""
    uris = [{"url": "authorize", "valueUri": urls.authorize},
            {"url": "token", "valueUri": urls.token},
            {"url": "introspect", "valueUri": urls.introspect},
            {"url": "revoke", "valueUri": urls.revoke}]
    if registration:
        uris.append({"url": "register", "valueUri": urls.register})
    return {
        "cors": True,
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": uris}],
    }
