"""How `fhirpm serve` runs uvicorn: TLS termination, graceful shutdown, no second opinion
on forwarded headers.

uvicorn's own proxy-header handling is switched off: it trusts 127.0.0.1 by default, and
forwarded headers are believed only from `FHIRPM_OPS__TRUSTED_PROXIES`, by the edge
middleware. On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish
for up to `shutdown_grace` seconds, and then runs the app's shutdown (HL7 listener, change
feed, store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhirpm.config import Settings


def with_tls(settings: Settings, cert: str | None, key: str | None) -> Settings:
    """Settings with `--tls-cert/--tls-key` applied; ValueError when they do not make sense."""
    if cert is not None or key is not None:
        cert = cert or settings.ops.tls_cert
        key = key or settings.ops.tls_key
        if not cert or not key:
            raise ValueError("TLS needs both a certificate (--tls-cert) and its key "
                             "(--tls-key)")
        ops = settings.ops.model_copy(update={"tls_cert": cert, "tls_key": key})
        settings = settings.model_copy(update={"ops": ops})
    for what, path in (("certificate", settings.ops.tls_cert), ("key", settings.ops.tls_key)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"TLS {what} file not found: {path}")
    return settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` besides the app."""
    ops = settings.ops
    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_config": None,
        "access_log": False,  # the edge middleware writes the access log (JSON, request id)
        "lifespan": "on", "proxy_headers": False, "server_header": False,
        "timeout_graceful_shutdown": ops.shutdown_grace,
    }
    if ops.tls_cert:
        options.update(ssl_certfile=ops.tls_cert, ssl_keyfile=ops.tls_key)
    return options
