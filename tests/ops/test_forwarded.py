"""Which client address, scheme and host a request really had, given its peer and its
X-Forwarded-* headers; and how request paths name their interaction."""

from __future__ import annotations

import pytest

from fhirpm.ops.classify import classify
from fhirpm.ops.forwarded import TrustedProxies

PROXIES = TrustedProxies(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(("peer", "xff", "client"), [
    ("10.0.0.1", "203.0.113.9", "203.0.113.9"),
    ("10.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # left of it: not ours to trust
    ("10.0.0.1", "203.0.113.9, 10.0.0.7", "203.0.113.9"),  # a second proxy hop is skipped
    ("10.0.0.1", "10.0.0.9, 10.0.0.7", "10.0.0.9"),  # all proxies: the left-most
    ("10.0.0.1", "[2001:db8::5]:443", "2001:db8::5"),
    ("10.0.0.1", "203.0.113.9:5555", "203.0.113.9"),
    ("fd00::1", "2001:db8::7", "2001:db8::7"),
    ("10.0.0.1", "not-an-ip", "10.0.0.1"),  # malformed: stop believing the chain
    ("10.0.0.1", None, "10.0.0.1"),
    ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # an untrusted peer's claims are ignored
])
def test_client_address(peer: str, xff: str | None, client: str) -> None:
    assert PROXIES.resolve(peer, "http", xff, None, None).client == client


def test_proto_and_host_are_the_nearest_proxys_and_must_look_right() -> None:
    origin = PROXIES.resolve("10.0.0.1", "http", None, "http, https", "a.example, ehr.example:8443")
    assert (origin.scheme, origin.host) == ("https", "ehr.example:8443")
    odd = PROXIES.resolve("10.0.0.1", "http", None, "gopher", "bad host/")
    assert (odd.scheme, odd.host) == ("http", None)
    assert PROXIES.resolve("192.0.2.1", "http", None, "https", "x.example").scheme == "http"
    assert not TrustedProxies([]) and not TrustedProxies([]).trusts("10.0.0.1")
    assert not PROXIES.trusts(None) and not PROXIES.trusts("garbage")


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/fhir/Patient/1", ("read", "Patient")),
    ("HEAD", "/fhir/Patient/1", ("read", "Patient")),
    ("PUT", "/fhir/Patient/1", ("update", "Patient")),
    ("PATCH", "/fhir/Patient/1", ("patch", "Patient")),
    ("DELETE", "/fhir/Patient/1", ("delete", "Patient")),
    ("POST", "/fhir/Patient", ("create", "Patient")),
    ("GET", "/fhir/Patient", ("search-type", "Patient")),
    ("POST", "/fhir/Patient/_search", ("search-type", "Patient")),
    ("GET", "/fhir", ("search-system", "")),
    ("POST", "/fhir/_search", ("search-system", "")),
    ("GET", "/fhir/Patient/1/Observation", ("search-compartment", "Observation")),
    ("GET", "/fhir/Patient/1/_history/2", ("vread", "Patient")),
    ("GET", "/fhir/Patient/1/_history", ("history", "Patient")),
    ("GET", "/fhir/Patient/_history", ("history", "Patient")),
    ("GET", "/fhir/_history", ("history", "")),
    ("GET", "/fhir/metadata", ("metadata", "")),
    ("GET", "/fhir/Patient/1/$everything", ("operation", "Patient")),
    ("POST", "/fhir/$reindex", ("operation", "")),
    ("POST", "/fhir", ("batch-or-transaction", "")),
    ("GET", "/fhir/Made-Up/1", ("read", "unknown")),
    ("GET", "/fhir/.well-known/smart-configuration", ("auth", "")),
    ("OPTIONS", "/fhir/Patient", ("options", "")),
    ("GET", "/fhir/Patient//1/", ("read", "Patient")),
    ("GET", "/fhir/a/b/c/d/e", ("other", "unknown")),
    ("GET", "/fhirx", ("other", "")),
    ("POST", "/auth/token", ("auth", "")),
    ("GET", "/readyz", ("ops", "")),
    ("GET", "/docs", ("other", "")),
])
def test_interaction_labels(method: str, path: str, expected: tuple[str, str]) -> None:
    assert classify(method, path) == expected


def test_the_bundle_handler_names_batch_and_transaction() -> None:
    assert classify("POST", "/fhir", label="transaction") == ("transaction", "")
    assert classify("POST", "/fhir/", label="batch") == ("batch", "")
