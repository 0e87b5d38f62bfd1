"""Settings: read once from the environment (FHIRPM_ prefix) and passed down as arguments.

Nothing imports a global settings object; `create_app(settings)` hands each part what it needs.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # A verified access token is trusted this long before its revocation is re-checked
    # (per process; fhirpm.api.bearer): the most a revocation can lag on each node.
    token_recheck_seconds: float = Field(5.0, ge=0)


class RateLimit(BaseModel):
    """A token bucket: up to `burst` requests at once, refilled at `per_minute`."""

    model_config = {"frozen": True}

    burst: int = Field(ge=1)
    per_minute: float = Field(gt=0)


class OpsSettings(BaseModel):
    """Operations (fhirpm.ops, docs/operations.md); FHIRPM_OPS__<NAME>, lists as JSON."""

    model_config = {"frozen": True}

    # Origins browser apps may call the FHIR API from; None: the registered clients'
    # redirect-URI origins; ["*"]: any origin.
    cors_origins: list[str] | None = None
    trusted_proxies: list[str] = []  # IPs or CIDRs whose X-Forwarded-* headers are believed
    rate_limits: bool = True
    login_limit: RateLimit = RateLimit(burst=30, per_minute=30)  # per client IP
    login_user_limit: RateLimit = RateLimit(burst=10, per_minute=10)  # per IP and username
    token_limit: RateLimit = RateLimit(burst=60, per_minute=120)  # per client IP
    register_limit: RateLimit = RateLimit(burst=5, per_minute=5)  # per client IP
    request_timeout: float = Field(60.0, ge=0)  # seconds until the response starts; 0: none
    tls_cert: str | None = None  # PEM; with tls_key, `serve` speaks HTTPS itself
    tls_key: str | None = None
    hsts_seconds: int = Field(365 * 86400, ge=0)  # Strict-Transport-Security over HTTPS
    shutdown_grace: float = Field(30.0, ge=0)  # seconds in-flight requests get at shutdown
    access_log: bool = True  # one JSON line per request (fhirpm.access)
    metrics: bool = True  # /metrics (Prometheus text format)
    metrics_token: str | None = None  # when set, /metrics needs `Authorization: Bearer <it>`

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item.strip(), strict=False)  # ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> OpsSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("ops.tls_cert and ops.tls_key must be given together")
        return self


class AuditSettings(BaseModel):
    """The audit trail (fhirpm.audit, docs/operations.md); FHIRPM_AUDIT__<NAME>."""

    model_config = {"frozen": True}

    enabled: bool = True  # false: no AuditEvents at all (never in production)
    fail_closed: bool = True  # a request whose AuditEvent cannot be stored fails (503)
    retention_days: int = Field(6 * 366, ge=0)  # events older are purged; 0: keep forever
    purge_interval_seconds: float = Field(3600.0, gt=0)
    hmac_key: str | None = None  # seals the chain with HMAC-SHA-256 (keep it off the DB host)
    site: str | None = None  # AuditEvent.source.site, e.g. the practice's name
    batch_max: int = Field(500, ge=1)  # most read events committed together
    # requests' records made durable in a journal file, sealed into the chain in bulk
    # (fhirpm.audit.journal); off: each group of records is committed to the store
    journal: bool = True
    journal_dir: str | None = None  # default: beside a SQLite store's file; MongoDB: none
    journal_sync: bool = False  # fdatasync every append (survives power loss, slower)


# -- HL7 v2 bridge (fhirpm.hl7v2): FHIRPM_HL7__<NAME>, nested values as JSON ----------------


class SenderSettings(BaseModel):
    """How to read one sender's messages, keyed by MSH-3 (or `MSH-3^MSH-4`)."""

    model_config = {"frozen": True}

    charset: str | None = None  # overrides MSH-18 (e.g. "8859/1" for unlabelled Latin-1)
    timezone: str = ""  # for times without offset: "+01:00" or "Europe/Berlin"
    authorities: dict[str, str] = {}  # HD namespace (CX.4.1) -> identifier system URI


class Destination(BaseModel):
    """An outbound partner: where to send, which events, how."""

    model_config = {"frozen": True}

    name: str
    host: str
    port: int = Field(ge=1, le=65535)
    events: list[str] = ["SIU", "ADT", "DFT"]  # message codes or codes^events (SIU^S12)
    version: str = "2.5.1"
    receiving_application: str = ""
    receiving_facility: str = ""
    tls: bool = False
    tls_ca: str | None = None


class Hl7Settings(BaseModel):
    """FHIRPM_HL7__<NAME>; nested values (senders, destinations) as JSON."""

    model_config = {"frozen": True}

    enabled: bool = False  # `fhirpm serve` also runs the MLLP listener (--mllp sets it)
    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)
    max_frame_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    idle_timeout: float = Field(300.0, gt=0)  # seconds a connection may stay silent
    tls_cert: str | None = None  # PEM; with tls_key, the listener speaks TLS
    tls_key: str | None = None
    mappings: list[str] = []  # site mapping directories read over the built-in ones
    application: str = "FHIRPM"  # our MSH-3 on ACKs and outbound messages
    facility: str = ""
    default_sender: SenderSettings = SenderSettings()
    senders: dict[str, SenderSettings] = {}
    destinations: list[Destination] = []
    retry_initial: float = Field(1.0, gt=0)  # outbound backoff (seconds), doubling
    retry_max: float = Field(300.0, gt=0)
    max_attempts: int = Field(20, ge=1)  # then the message goes to the dead letters
    dedup_days: int = Field(30, ge=1)  # how long (MSH-3, MSH-4, MSH-10) keys are kept

    def sender(self, application: str, facility: str) -> SenderSettings:
        return (self.senders.get(f"{application}^{facility}") or self.senders.get(application)
                or self.default_sender)


class SchedulingSettings(BaseModel):
    """Scheduling and booking (fhirpm.scheduling, docs/scheduling.md); FHIRPM_SCHEDULING__<NAME>."""

    model_config = {"frozen": True}

    hold_minutes: float = Field(10.0, ge=0)  # how long $hold keeps slots for a patient
    horizon_days: int = Field(90, ge=1)  # slots are generated this far ahead
    default_slot_minutes: int = Field(15, ge=1)  # a Schedule without a slot-length extension
    timezone: str = "UTC"  # IANA zone of schedules whose Location names none
    release_holds_seconds: float = Field(60.0, gt=0)  # job interval: expired holds freed
    generate_slots_seconds: float = Field(3600.0, gt=0)  # job interval: horizon rolled on
    find_max_results: int = Field(100, ge=1)  # most proposed appointments $find returns
    # The visit (fhirpm.scheduling.visit, video, publish)
    require_cancel_reason: bool = False  # a cancellation must carry cancelationReason
    video_provider: str = "jitsi"  # the video-visit provider (fhirpm.scheduling.video)
    video_base_url: str | None = None  # e.g. https://meet.example.org/; None: no join links
    publish_enabled: bool = False  # public SMART Scheduling Links at [base]/$bulk-publish
    publish_max_age: int = Field(300, ge=0)  # Cache-Control max-age of published files
    publish_lag_seconds: float = Field(5.0, ge=0)  # transactionTime trails now by this
    publish_booking_url: str | None = None  # booking-deep-link template, "{slot}" = Slot id
    publish_booking_phone: str | None = None  # booking-phone on every published Slot


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
    # Worker processes validating and indexing large transactions ahead
    # (fhirpm.repository.prepare); 0: none. Off by default: on 2 cores the pickling costs
    # more than the parallel work saves (docs/performance.md, "Writes and ingest").
    transaction_workers: int = Field(0, ge=0)
    # Reader threads for the SQLite adapter (writes always go through one writer thread).
    sqlite_readers: int = Field(4, ge=1)
    # MongoDB without multi-document transactions (a standalone mongod): refused at start-up
    # unless this accepts non-atomic units of work (docs/deploy.md).
    mongo_allow_no_transactions: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    auth: AuthSettings = AuthSettings()
    hl7: Hl7Settings = Hl7Settings()  # HL7 v2 bridge (fhirpm.config)
    ops: OpsSettings = OpsSettings()  # health, metrics, limits, TLS, proxies (fhirpm.ops)
    audit: AuditSettings = AuditSettings()  # the audit trail (fhirpm.audit)
    scheduling: SchedulingSettings = SchedulingSettings()  # fhirpm.scheduling

    @property
    def fhir_base(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        scheme = "https" if self.ops.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}/fhir"
