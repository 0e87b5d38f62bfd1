"""Settings: read once from the environment (FHIRPM_ prefix) and passed down as arguments.

Nothing imports a global settings object; `create_app(settings)` hands each part what it needs.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Reader threads for the SQLite adapter (writes always go through one writer thread).
    sqlite_readers: int = Field(4, ge=1)
    # MongoDB without multi-document transactions (a standalone mongod): refused at start-up
    # unless this accepts non-atomic units of work (docs/deploy.md).
    mongo_allow_no_transactions: bool = False
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def fhir_base(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"
