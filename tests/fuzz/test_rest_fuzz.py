"""Property: whatever arrives over HTTP, the answer is never a 500, and every error is an
OperationOutcome with a sensible 4xx status.

Hypothesis builds requests over the whole REST surface (random methods, paths made of real
and bogus types/ids/segments, query parameters, headers, and bodies that are valid
resources, the wrong resource, Bundles, JSON Patch, malformed JSON, binary noise, deep
nesting or too large) and sends them to the ASGI app on a real SQLite file. Derandomized with
a fixed number of examples, so a run is deterministic and takes a few seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fhirpm.app import create_app
from fhirpm.config import Settings
from tests.bearer import staff_headers

BASE = "http://fuzz/fhir"
MAX_BODY = 16 * 1024
EXAMPLES = 300
ALLOWED_ERRORS = {400, 401, 403, 404, 405, 406, 409, 410, 412, 413, 415, 422}

Send = Callable[[str, str, dict[str, str], bytes | None], httpx.Response]


def fuzz_settings(tmp: Path) -> Settings:
    values: dict[str, Any] = {"store_url": f"sqlite:///{tmp / 'fuzz.db'}", "base_url": BASE,
                              "max_body_bytes": MAX_BODY, "log_json": False}
    return Settings(**values)


@pytest.fixture(scope="module")
def send(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Send]:
    """One app and one event loop for every example (hypothesis calls the test many times)."""
    runner = asyncio.Runner()
    app = create_app(fuzz_settings(tmp_path_factory.mktemp("fuzz")))
    # no timer runs a job (a hold release, a slot generation) at some wall-clock moment of
    # the run: the same examples then meet the same data on every run
    held = app.state.jobs.held()
    runner.run(held.__aenter__())
    lifespan = app.router.lifespan_context(app)
    runner.run(lifespan.__aenter__())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE,
                               headers=runner.run(staff_headers(app)))  # access control on

    def request(method: str, url: str, headers: dict[str, str],
                body: bytes | None) -> httpx.Response:
        return runner.run(client.request(method, url, headers=headers, content=body))

    # a few resources to hit with reads, updates, deletes and history
    for rid in ("p1", "p2"):
        request("PUT", f"{BASE}/Patient/{rid}", {"content-type": "application/fhir+json"},
                json.dumps({"resourceType": "Patient", "id": rid}).encode())
    try:
        yield request
    finally:
        runner.run(client.aclose())
        runner.run(lifespan.__aexit__(None, None, None))
        runner.run(held.__aexit__(None, None, None))
        runner.close()


# -- strategies ---------------------------------------------------------------------------

TYPES = ["Patient", "Observation", "Bundle", "Basic", "Foo", "patient", "OperationOutcome",
         "SubstanceDefinition", "MedicinalProduct", "Resource", "DomainResource"]
IDS = st.one_of(
    st.sampled_from(["p1", "p2", "missing", "a" * 64, "a" * 65, "..", ".", "-", "1.2",
                     "bad id", "é", "%00", "x/y", "$validate", "_history", "0"]),
    st.text(min_size=1, max_size=20),
)
SEGMENTS = st.one_of(
    st.sampled_from(TYPES), IDS,
    st.sampled_from(["_history", "_search", "metadata", "$validate", "$everything",
                     "$meta", "$bogus", "1", "2", "999", "abc", ""]),
)
METHODS = st.sampled_from(["GET"] * 3 + ["POST"] * 3 + ["PUT"] * 2 +
                          ["PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "BREW"])
CONTENT_TYPES = st.sampled_from([
    "application/fhir+json", "application/json", "application/fhir+json; charset=utf-8",
    "application/json-patch+json", "application/fhir+xml", "text/plain", "multipart/form-data",
    "application/x-www-form-urlencoded", "", "garbage", "application/fhir+json;fhirVersion=4.0",
])
ACCEPTS = st.sampled_from([
    "application/fhir+json", "application/json", "*/*", "application/fhir+xml", "text/html",
    "text/turtle", "", "application/fhir+json;q=0.5, application/xml;q=0.9", ";;;",
])
PARAM_NAMES = st.sampled_from([
    "_format", "_pretty", "_summary", "_elements", "_count", "_since", "_at", "_cursor",
    "_id", "_lastUpdated", "name", "identifier", "_sort", "_include", "_revinclude", "_total",
    "subject:Patient.name", "birthdate", "unknown", "_type", "_has:Observation:subject:code",
])
PARAM_VALUES = st.one_of(
    st.sampled_from(["json", "xml", "true", "false", "count", "data", "text", "-1", "0", "5",
                     "99999999999999999999", "2020-01-01", "2020-13-45", "ge2020", "lt",
                     "id,meta", "http://x|y", "|", "Patient:subject", "*", "xx:yy"]),
    st.text(max_size=20),
)
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10),
                     st.floats(allow_nan=False, allow_infinity=False))


JSON_VALUES = st.recursive(
    json_scalars(),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": draw(st.sampled_from(TYPES))}
    if draw(st.booleans()):
        resource["id"] = draw(IDS)
    extra = draw(st.dictionaries(
        st.sampled_from(["status", "gender", "birthDate", "name", "code", "subject", "meta",
                         "text", "contained", "extension", "value", "entry", "type",
                         "valueQuantity", "identifier", "active"]),
        JSON_VALUES, max_size=4))
    resource.update(extra)
    return resource


@st.composite
def bundles(draw: st.DrawFn) -> dict[str, Any]:
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        entry: dict[str, Any] = {}
        if draw(st.booleans()):
            entry["fullUrl"] = draw(st.sampled_from(
                ["urn:uuid:0b2a0c9e-5e5f-4c4e-9b1e-000000000001", "urn:uuid:bad", "Patient/p1",
                 "http://other/fhir/Patient/1", ""]))
        if draw(st.booleans()):
            entry["resource"] = draw(resources())
        entry["request"] = draw(st.one_of(
            st.fixed_dictionaries({"method": METHODS, "url": st.one_of(
                st.sampled_from(["Patient", "Patient/p1", "Patient?name=x", "Observation",
                                 "Patient/p1/_history/1", "", "Foo/1", "metadata"]),
                st.text(max_size=15))}),
            JSON_VALUES))
        entries.append(entry)
    return {"resourceType": "Bundle",
            "type": draw(st.sampled_from(["transaction", "batch", "collection", "searchset",
                                          "history", "document", "nonsense"])),
            "entry": entries}


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


BODIES = st.one_of(
    st.none(),
    st.fixed_dictionaries({"resourceType": st.sampled_from(["Patient", "Basic"]),
                           "id": st.sampled_from(["p1", "p2", "new-1"])},
                          optional={"active": st.booleans(),
                                    "gender": st.sampled_from(["male", "robot", 1])}).map(encode),
    resources().map(encode),
    bundles().map(encode),
    st.lists(st.fixed_dictionaries({"op": st.sampled_from(["add", "replace", "remove", "test",
                                                           "move", "copy", "bogus"]),
                                    "path": st.sampled_from(["/gender", "/name/0", "/id",
                                                             "/meta", "", "/", "bad"]),
                                    "value": JSON_VALUES}), max_size=3).map(encode),
    JSON_VALUES.map(encode),
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"{", b'{"resourceType":', b"[]", b"null", b'"Patient"', b"\xff\xfe",
                     b'{"resourceType":"Patient","birthDate":1e999}',
                     b"[" * 5000 + b"]" * 5000,
                     b'{"resourceType":"Patient","name":' + b"[" * 3000 + b"]" * 3000 + b"}",
                     b'{"resourceType":"Patient","gender":"' + b"x" * (MAX_BODY + 1) + b'"}']),
)


def _segment(text: str) -> str:
    """Percent-encode a path segment; dot segments too, so the URL stays under the base."""
    return "%2E" * len(text) if text and set(text) == {"."} else quote(text, safe="$")


VALID_TYPES = st.sampled_from(["Patient", "Observation", "Basic", "Bundle"])
STRUCTURED_PATHS = st.one_of(
    st.just([]),
    st.tuples(VALID_TYPES).map(list),
    st.tuples(VALID_TYPES, IDS).map(list),
    st.tuples(VALID_TYPES, IDS, st.just("_history")).map(list),
    st.tuples(VALID_TYPES, IDS, st.just("_history"), SEGMENTS).map(list),
    st.tuples(VALID_TYPES, st.sampled_from(["_history", "_search", "$validate"])).map(list),
    st.tuples(VALID_TYPES, IDS, st.just("$validate")).map(list),
    st.sampled_from([["_history"], ["metadata"], ["_search"]]),
)


def mostly(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy:
    """The usual value four times in five, so most requests get past header checks."""
    return st.integers(0, 4).flatmap(lambda n: odd if n == 0 else usual)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None]:
    segments = draw(mostly(STRUCTURED_PATHS, st.lists(SEGMENTS, max_size=5)))
    path = "/".join(_segment(s) for s in segments)
    params = draw(st.lists(st.tuples(PARAM_NAMES, PARAM_VALUES), max_size=3))
    url = f"{BASE}/{path}" + (f"?{urlencode(params)}" if params else "")
    headers = {"content-type": draw(mostly(st.just("application/fhir+json"), CONTENT_TYPES)),
               "accept": draw(mostly(st.just("application/fhir+json"), ACCEPTS))}
    for name, strategy in (("if-match", HEADER_TEXT), ("if-none-match", HEADER_TEXT),
                           ("if-modified-since", HEADER_TEXT), ("if-none-exist", HEADER_TEXT),
                           ("prefer", st.sampled_from(["return=minimal", "return=OperationOutcome",
                                                       "return=representation", "handling=strict",
                                                       "respond-async", "return"]))):
        if draw(st.integers(0, 4)) == 0:
            headers[name] = draw(strategy)
    return draw(METHODS), url, headers, draw(BODIES)


# -- the property ---------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests())
@example(request=("POST", f"{BASE}/Patient", {"content-type": "application/fhir+json"},
                  b'{"resourceType":"Patient","gender":"' + b"x" * MAX_BODY + b'"}'))
@example(request=("POST", f"{BASE}/Patient", {"content-type": "application/fhir+json"},
                  b"[" * 100_000))
@example(request=("PUT", f"{BASE}/Patient/p1", {"content-type": "application/fhir+json"},
                  b'{"resourceType":"Patient","id":"p1",'))
@example(request=("BREW", f"{BASE}/Patient", {}, None))
@example(request=("GET", f"{BASE}/Patient/%0A0", {}, None))
@example(request=("POST", f"{BASE}/Patient", {"content-type": "text/plain"}, b"hello"))
def test_no_input_gets_a_500_and_every_error_is_an_operation_outcome(
        send: Send, request: tuple[str, str, dict[str, str], bytes | None]) -> None:
    method, url, headers, body = request
    r = send(method, url, headers, body)
    assert r.status_code < 500, f"{method} {url} -> {r.status_code}: {r.text[:500]}"
    if r.status_code < 400:
        return
    assert r.status_code in ALLOWED_ERRORS, f"{method} {url} -> {r.status_code}"
    if method == "HEAD":
        return  # no body by definition
    assert r.headers.get("content-type", "").startswith(("application/fhir+json",
                                                         "application/json")), r.headers
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome", r.text[:500]
    assert outcome["issue"] and all(i["severity"] in ("fatal", "error", "warning",
                                                      "information") for i in outcome["issue"])
