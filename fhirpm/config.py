"""Settings: read once from the environment (FHIRPM_ prefix) and passed down as arguments.

Nothing imports a global settings object; `create_app(settings)` hands each part what it needs.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fhirpm.hl7v2.settings import Hl7Settings


class AuthSettings(BaseModel):
    """The built-in SMART authorization server (fhirpm.auth); FHIRPM_AUTH__<NAME>."""

    model_config = {"frozen": True}

    enabled: bool = True  # false: no authorization at all (local development only)
    issuer: str | None = None  # public URL of /auth; default: the FHIR base's sibling /auth
    access_token_seconds: int = Field(3600, ge=30)
    id_token_seconds: int = Field(3600, ge=30)
    code_seconds: int = Field(60, ge=5)
    launch_seconds: int = Field(300, ge=10)
    login_seconds: int = Field(8 * 3600, ge=60)  # browser session at the login page
    offline_refresh_seconds: int = Field(90 * 86400, ge=60)
    online_refresh_seconds: int = Field(86400, ge=60)
    assertion_max_seconds: int = Field(300, ge=10)  # client assertion exp at most this ahead
    cors_origins: list[str] = ["*"]  # on token/introspection/revocation/discovery; "*": any
    registration_enabled: bool = False  # RFC 7591 dynamic client registration
    lockout_attempts: int = Field(5, ge=1)
    lockout_seconds: int = Field(900, ge=1)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8)
    jwks_fetch_seconds: float = Field(5.0, gt=0)  # timeout fetching a client's jwks_uri


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIRPM_", env_nested_delimiter="__", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8080
    # Public base URL of the FHIR endpoint; derived from host/port when not set.
    base_url: str | None = None
    store_url: str = "sqlite:///./var/fhirpm.db"
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    default_count: int = Field(20, ge=1)
    max_count: int = Field(1000, ge=1)
    # Most entries a batch/transaction Bundle may carry (the body limit applies as well).
    bundle_max_entries: int = Field(10_000, ge=1)
    # Reader threads for the SQLite adapter (writes always go through one writer thread).
    sqlite_readers: int = Field(4, ge=1)
    # MongoDB without multi-document transactions (a standalone mongod): refused at start-up
    # unless this accepts non-atomic units of work (docs/deploy.md).
    mongo_allow_no_transactions: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    auth: AuthSettings = AuthSettings()
    hl7: Hl7Settings = Hl7Settings()  # HL7 v2 bridge (fhirpm.hl7v2.settings)

    @property
    def fhir_base(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"
