"""The edge's cheap parts answer what the general ones did: the request metrics' single
row per (labels, status) renders the counter and histogram that separate families would,
the access line's own rendering is the record's, and the short cut for one-resource paths
classifies as the general walk does."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fhirpm.logs import AccessLine, JsonFormatter, JsonLinesHandler
from fhirpm.ops.classify import _walk, classify
from fhirpm.ops.metrics import Registry

OBSERVED = [("read", "Patient", 200, 0.0004), ("read", "Patient", 200, 0.003),
            ("read", "Patient", 404, 0.0011), ("search-type", "Observation", 200, 0.2),
            ("read", "Patient", 200, 50.0)]


async def test_request_metrics_render_what_a_counter_and_a_histogram_would() -> None:
    combined, separate = Registry(), Registry()
    requests = combined.requests(("req_total", "requests"), ("req_seconds", "latency"),
                                 ("interaction", "type"))
    counter = separate.counter("req_total", "requests", ("interaction", "type", "status"))
    histogram = separate.histogram("req_seconds", "latency", ("interaction", "type"))
    for interaction, type_, status, seconds in OBSERVED:
        requests.record(interaction, type_, status, seconds)
        counter.inc((interaction, type_, str(status)))
        histogram.observe((interaction, type_), seconds)
    assert await combined.render() == await separate.render()


@pytest.fixture
def logger() -> logging.Logger:
    log = logging.getLogger("fhirpm.test-access")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    log.handlers.clear()


@pytest.mark.parametrize("path", ["/fhir/Patient/1", '/fhir/Pa"tient/\\x\n/é/\u2028'])
def test_the_access_line_is_what_the_record_would_have_been(logger: logging.Logger,
                                                            path: str) -> None:
    direct = io.StringIO()
    logger.addHandler(JsonLinesHandler(direct))
    AccessLine(logger).request("r-1", "GET", path, 200, 1.25, "10.0.0.1", "read")
    fields = {"request_id": "r-1", "method": "GET", "path": path, "status": 200,
              "duration_ms": 1.25, "client": "10.0.0.1", "interaction": "read"}
    record = logger.makeRecord(logger.name, logging.INFO, "", 0, f"GET {path} 200", (),
                               None, extra=fields)
    got = json.loads(direct.getvalue())
    want = json.loads(JsonFormatter().format(record))
    del got["ts"], want["ts"]
    assert list(got.items()) == list(want.items())


def test_the_access_line_goes_through_a_record_under_other_handlers(
        logger: logging.Logger) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    AccessLine(logger).request("r-2", "PUT", "/fhir/Patient/2", 201, 3.5, None, "update")
    [record] = records
    assert record.getMessage() == "PUT /fhir/Patient/2 201"
    assert (record.request_id, record.status, record.client) == ("r-2", 201, None)


METHODS = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "POST", "OPTIONS"]
PATHS = ["/fhir/Patient/1", "/fhir/Invented/1", "/fhir/Patient/_history",
         "/fhir/Patient/$validate", "/fhir/$x/1", "/fhir/.well-known/smart-configuration",
         "/fhir/Patient//1", "/fhir/Patient/1/", "/fhir//Patient/1", "/fhir/Patient/1/x",
         "/fhirx/Patient/1", "/fhir/Patient/_search", "/fhir/metadata/1", "/fhir/Patient/a$b"]


@pytest.mark.parametrize("method", METHODS)
def test_the_one_resource_short_cut_classifies_as_the_walk_does(method: str) -> None:
    for path in PATHS:
        assert classify(method, path) == _walk(method, path, "/fhir", None), path


async def test_a_fhir_response_carries_the_edge_headers_once_after_its_own(
        tmp_path) -> None:
    from tests.ops.conftest import FHIR_JSON, ops_settings, running

    patient = {"resourceType": "Patient", "id": "p1"}
    async with running(ops_settings(tmp_path)) as (app, client):
        assert app.fhir_fast_path.direct is not None  # no wrapped send for FHIR requests
        await client.put("/fhir/Patient/p1", json=patient, headers=FHIR_JSON)
        read = await client.get("/fhir/Patient/p1", headers={"X-Request-ID": "r-9"})
        missing = await client.get("/fhir/Patient/nope")
    names = [name.decode() for name, _ in read.headers.raw]
    assert names == ["etag", "last-modified", "content-length", "content-type",
                     "x-request-id", "x-content-type-options"]
    assert read.headers["x-request-id"] == "r-9"
    assert missing.status_code == 404
    assert [n.decode() for n, _ in missing.headers.raw].count("x-content-type-options") == 1
    assert missing.headers["x-request-id"]
