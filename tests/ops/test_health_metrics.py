"""/healthz, /readyz (with checks other parts register) and /metrics in the Prometheus text
format, counting requests by interaction and type."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from fhirpm.app import create_app
from fhirpm.ops.metrics import Registry
from tests.ops.conftest import FHIR_JSON, ORIGIN, ops_settings, running

# one sample line of the text exposition format (version 0.0.4)
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})?'
                    r" (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$")


def parse(text: str) -> dict[str, float]:
    """Samples by their full name-and-labels, after checking every line's syntax."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert SAMPLE.match(line), f"not a valid sample line: {line!r}"
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


async def test_healthz_and_readyz(tmp_path: Path) -> None:
    async with running(ops_settings(tmp_path)) as (app, client):
        up = await client.get("/healthz")
        ready = await client.get("/readyz")
        flag = {"ok": False}
        app.state.ops.readiness.add("mllp", lambda: True if flag["ok"] else "not listening")

        async def slow_async_ok() -> bool:
            return True

        app.state.ops.readiness.add("queue", slow_async_ok)
        waiting = await client.get("/readyz")
        flag["ok"] = True
        all_ok = await client.get("/readyz")
    assert up.status_code == 200 and up.json() == {"status": "up"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"lifecycle": "ok", "store": "ok"}}
    assert waiting.status_code == 503
    assert waiting.json()["checks"]["mllp"] == "not listening"
    assert all_ok.status_code == 200 and set(all_ok.json()["checks"]) == {
        "lifecycle", "store", "mllp", "queue"}


async def test_readyz_fails_before_startup_and_after_shutdown(tmp_path: Path) -> None:
    app = create_app(ops_settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        before = await client.get("/readyz")
        async with app.router.lifespan_context(app):
            during = await client.get("/readyz")
        after = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert before.status_code == 503
    assert before.json()["checks"] == {"lifecycle": "starting",
                                       "store": "failed (AssertionError)"}
    assert during.status_code == 200
    assert after.status_code == 503 and after.json()["checks"]["lifecycle"] == "stopped"
    assert alive.status_code == 200


async def test_metrics_count_requests_by_interaction_and_type(tmp_path: Path) -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Ng"}]}
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/p1"}}]}
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient, "request": {"method": "POST", "url": "Patient"}}]}
    async with running(ops_settings(tmp_path)) as (_, client):
        await client.put("/fhir/Patient/p1", json={**patient, "id": "p1"}, headers=FHIR_JSON)
        await client.get("/fhir/Patient/p1")
        await client.get("/fhir/Patient/p1")
        await client.get("/fhir/Patient/p1/_history/1")
        await client.get("/fhir/Patient/missing")
        await client.get("/fhir/Patient", params={"family": "Ng"})
        await client.post("/fhir/Patient", json=patient, headers=FHIR_JSON)
        await client.get("/fhir/Patient/p1/_history")
        await client.get("/fhir/metadata")
        await client.post("/fhir", json=batch, headers=FHIR_JSON)
        await client.post("/fhir", json=transaction, headers=FHIR_JSON)
        await client.get("/fhir/Invented/1")
        await client.delete("/fhir/Patient/p1")
        scrape = await client.get("/metrics")
    assert scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(scrape.text)

    def count(interaction: str, type_: str, status: int) -> float:
        return samples.get(f'fhirpm_http_requests_total{{interaction="{interaction}",'
                           f'type="{type_}",status="{status}"}}', 0)

    assert count("update", "Patient", 201) == 1
    assert count("read", "Patient", 200) == 2
    assert count("read", "Patient", 404) == 1
    assert count("vread", "Patient", 200) == 1
    assert count("search-type", "Patient", 200) == 1
    assert count("create", "Patient", 201) == 1
    assert count("history", "Patient", 200) == 1
    assert count("metadata", "", 200) == 1
    assert count("batch", "", 200) == 1
    assert count("transaction", "", 200) == 1
    assert count("read", "unknown", 404) == 1  # invented types do not become labels
    assert count("delete", "Patient", 204) == 1
    latency = 'fhirpm_http_request_duration_seconds_count{interaction="read",type="Patient"}'
    assert samples[latency] == 3
    inf = ('fhirpm_http_request_duration_seconds_bucket{interaction="read",type="Patient",'
           'le="+Inf"}')
    assert samples[inf] == 3
    assert samples['fhirpm_store_operation_duration_seconds_count{operation="read"}'] >= 3
    assert samples['fhirpm_store_operation_duration_seconds_count{operation="commit"}'] >= 3
    assert samples["fhirpm_http_requests_in_flight"] == 1  # the scrape itself


async def test_others_register_gauges_and_a_failing_one_is_skipped(tmp_path: Path) -> None:
    async with running(ops_settings(tmp_path)) as (app, client):
        metrics = app.state.ops.metrics

        async def by_status():
            return [(("AA",), 12), (("AE",), 1)]

        def broken():
            raise RuntimeError("queue unavailable")

        metrics.callback("fhirpm_hl7_messages", "HL7 v2 messages by status", ("status",),
                         by_status)
        metrics.callback("fhirpm_broken", "fails", (), broken)
        depth = metrics.gauge("fhirpm_outbox_depth", "messages waiting", ("destination",))
        depth.set(("lab",), 3)
        samples = parse((await client.get("/metrics")).text)
    assert samples['fhirpm_hl7_messages{status="AA"}'] == 12
    assert samples['fhirpm_hl7_messages{status="AE"}'] == 1
    assert samples['fhirpm_outbox_depth{destination="lab"}'] == 3
    assert not any(name.startswith("fhirpm_broken") for name in samples)


async def test_metrics_can_require_a_token(tmp_path: Path) -> None:
    async with running(ops_settings(tmp_path, metrics_token="s3cret")) as (_, client):
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert right.status_code == 200 and "fhirpm_build_info" in right.text


async def test_histogram_buckets_are_cumulative_and_labels_escaped() -> None:
    registry = Registry()
    hist = registry.histogram("h_seconds", "a histogram", ("path",), buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        hist.observe(('a"b\\c\nd',), value)
    counter = registry.counter("c_total", "a counter")
    counter.inc(amount=2.5)
    text = (await registry.render()).decode()
    samples = parse(text)
    label = 'path="a\\"b\\\\c\\nd"'
    assert samples[f'h_seconds_bucket{{{label},le="0.1"}}'] == 2  # le is inclusive
    assert samples[f'h_seconds_bucket{{{label},le="1"}}'] == 3
    assert samples[f'h_seconds_bucket{{{label},le="+Inf"}}'] == 4
    assert samples[f"h_seconds_count{{{label}}}"] == 4
    assert abs(samples[f"h_seconds_sum{{{label}}}"] - 2.65) < 1e-9
    assert samples["c_total"] == 2.5
    assert "# TYPE h_seconds histogram" in text and "# TYPE c_total counter" in text
