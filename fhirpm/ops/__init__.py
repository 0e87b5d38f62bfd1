"""Operations: what the people running fhirpm need around the FHIR API.

Request ids and JSON access logs, security headers, CORS for browser apps, rate limits on
the authorization endpoints, a request time limit, trusted forwarded headers, /healthz,
/readyz and /metrics, store latency, TLS and graceful shutdown for `serve`
(docs/operations.md). `install` wires it into an app; `app.state.ops` is where other parts
register readiness checks and metrics. Nothing below the API imports this package.
"""

from fhirpm.ops.wiring import Ops, install

__all__ = ["Ops", "install"]
