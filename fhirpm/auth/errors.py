"""OAuth 2.0 errors (RFC 6749 §5.2, RFC 7009, RFC 7662) as data.

The authorization server's endpoints must answer in OAuth's JSON error format, not as a
FHIR OperationOutcome, so they raise `OAuthError`; the HTTP status still comes from the one
Category table in fhirpm.errors. Resource-server failures (a bad bearer token) are
FhirErrors, built by `invalid_token` and `insufficient_scope` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhirpm.errors import Category, FhirError

REALM = "fhirpm"


@dataclass
class OAuthError(Exception):
    error: str  # invalid_request | invalid_client | invalid_grant | invalid_scope | ...
    description: str
    category: Category = Category.INVALID
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.error}: {self.description}")

    @property
    def status(self) -> int:
        return self.category.status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def invalid_scope(description: str) -> OAuthError:
    return OAuthError("invalid_scope", description)


def invalid_client(description: str, *, basic: bool = False) -> OAuthError:
    """401; a client that tried HTTP Basic must be told how to authenticate (RFC 6749)."""
    headers = {"WWW-Authenticate": f'Basic realm="{REALM}"'} if basic else {}
    return OAuthError("invalid_client", description, Category.UNAUTHORIZED, headers)


def unauthorized_client(description: str) -> OAuthError:
    return OAuthError("unauthorized_client", description)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


def missing_token() -> FhirError:
    return FhirError(Category.UNAUTHORIZED, "This request needs an access token",
                     headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})


def invalid_token(description: str) -> FhirError:
    """401 with `error="invalid_token"` (RFC 6750 §3.1)."""
    challenge = (f'Bearer realm="{REALM}", error="invalid_token", '
                 f'error_description="{_quote(description)}"')
    return FhirError(Category.UNAUTHORIZED, f"Invalid access token: {description}",
                     headers={"WWW-Authenticate": challenge})


def insufficient_scope(description: str, needed: str = "") -> FhirError:
    """403 with `error="insufficient_scope"` (RFC 6750 §3.1), for the resource server."""
    challenge = f'Bearer realm="{REALM}", error="insufficient_scope"'
    if needed:
        challenge += f', scope="{_quote(needed)}"'
    return FhirError(Category.FORBIDDEN, description, headers={"WWW-Authenticate": challenge})
