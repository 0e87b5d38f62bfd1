"""The Principal: who is calling and with what grant, as read from a verified access token.

It is what the resource server needs to enforce scopes and compartments; it carries no
keys, no store and no HTTP. `verify.TokenVerifier` produces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhirpm.auth.scopes import Access, ScopeSet


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str  # the user (username) or, for backend services, the client id
    client_id: str
    scopes: ScopeSet
    token_id: str  # the access token's jti
    exp: int  # epoch seconds
    fhir_user: str | None = None  # "Practitioner/123", "Patient/7", "RelatedPerson/9"
    patient: str | None = None  # launch context: the patient id (no type prefix)
    encounter: str | None = None  # launch context: the encounter id
    fhir_context: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    grant_id: str = ""  # the authorization grant this token belongs to

    @property
    def is_backend(self) -> bool:
        """A client_credentials token: no user, only system/ scopes."""
        return self.sub == self.client_id and self.fhir_user is None

    def access(self, type: str | None, interaction: str) -> Access:
        """What the token permits for `interaction` on `type` (see scopes.Access)."""
        return self.scopes.access(type, interaction)

    def allows(self, type: str | None, interaction: str) -> bool:
        return self.scopes.allows(type, interaction)

    def introspection(self) -> dict[str, Any]:
        """The launch context claims as RFC 7662 / SMART introspection fields."""
        out: dict[str, Any] = {"scope": str(self.scopes), "client_id": self.client_id,
                               "sub": self.sub, "exp": self.exp}
        if self.fhir_user:
            out["fhirUser"] = self.fhir_user
        if self.patient:
            out["patient"] = self.patient
        if self.encounter:
            out["encounter"] = self.encounter
        if self.fhir_context:
            out["fhirContext"] = list(self.fhir_context)
        return out
