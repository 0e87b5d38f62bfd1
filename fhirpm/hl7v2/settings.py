"""Settings of the HL7 v2 bridge (`FHIRPM_HL7__<NAME>`), per sender and per destination."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
