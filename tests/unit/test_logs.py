"""fhirpm.logs: JSON lines written once per loop iteration, and the access line's direct
path rendering exactly what a logged record would."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from fhirpm.logs import (
    FLUSH_SECONDS,
    MAX_PENDING,
    AccessLine,
    JsonFormatter,
    JsonLinesHandler,
)

FIELDS = {"request_id": "r-1", "method": "GET", "path": "/fhir/Patient/1", "status": 200,
          "duration_ms": 1.25, "client": None, "interaction": "read"}


class Annotate(logging.Filter):
    """Adds `tag` when missing; passes everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "tag"):
            record.tag = "added"
        return True


@pytest.fixture
def logger() -> logging.Logger:
    """An isolated logger (no propagation to the root, so pytest's handler never sees it)."""
    log = logging.getLogger("fhirpm.test-logs")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    log.handlers.clear()
    log.filters.clear()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in stream.getvalue().splitlines()]


def test_outside_a_loop_lines_are_written_at_once(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(JsonLinesHandler(stream))
    logger.info("hello %s", "there", extra={"n": 1})
    [line] = lines(stream)
    assert (line["msg"], line["n"], line["level"], line["logger"]) == (
        "hello there", 1, "info", "fhirpm.test-logs")


def test_in_a_loop_lines_are_written_together_in_order(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(JsonLinesHandler(stream))
    seen: list[int] = []

    async def main() -> None:
        for n in range(3):
            logger.info("line %d", n)
        seen.append(len(stream.getvalue().splitlines()))  # nothing written yet
        # the flush is a timer due FLUSH_SECONDS after the first line: one due later
        # runs after it on the same loop, whatever the machine's speed
        await asyncio.sleep(FLUSH_SECONDS * 2)
        seen.append(len(stream.getvalue().splitlines()))

    asyncio.run(main())
    assert seen == [0, 3]
    assert [x["msg"] for x in lines(stream)] == ["line 0", "line 1", "line 2"]


def test_a_backlog_is_written_at_once(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(JsonLinesHandler(stream))

    async def main() -> int:
        for n in range(MAX_PENDING):
            logger.info("line %d", n)
        return len(stream.getvalue().splitlines())

    assert asyncio.run(main()) == MAX_PENDING


def test_a_loop_closed_before_its_flush_does_not_hold_later_lines(
        logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(JsonLinesHandler(stream))
    loop = asyncio.new_event_loop()

    async def log_and_stop() -> None:
        logger.info("first")

    loop.run_until_complete(log_and_stop())  # its flush may still be queued
    loop.close()

    async def later() -> None:
        logger.info("second")
        await asyncio.sleep(FLUSH_SECONDS * 2)

    asyncio.run(later())
    assert [x["msg"] for x in lines(stream)][-1] == "second"


def test_the_direct_access_line_is_what_the_record_would_have_been(
        logger: logging.Logger) -> None:
    direct, recorded = io.StringIO(), io.StringIO()
    handler = JsonLinesHandler(direct)
    handler.addFilter(Annotate())
    logger.addHandler(handler)
    AccessLine(logger, annotators=(Annotate,)).line("GET /fhir/Patient/1 200",
                                                    {**FIELDS, "tag": "mine"})
    record = logger.makeRecord(logger.name, logging.INFO, "", 0, "GET /fhir/Patient/1 200",
                               (), None, extra={**FIELDS, "tag": "mine"})
    recorded.write(JsonFormatter().format(record))
    [got], [want] = lines(direct), [json.loads(recorded.getvalue())]
    del got["ts"], want["ts"]  # made a moment apart; the format is tested below
    assert list(got.items()) == list(want.items())
    assert got["tag"] == "mine" and got["request_id"] == "r-1"


def test_the_timestamp_is_utc_to_the_millisecond(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(JsonLinesHandler(stream))
    AccessLine(logger).line("x", {})
    record = logger.makeRecord(logger.name, logging.INFO, "", 0, "y", (), None)
    record.created, record.msecs = 1764347223.0456, 45.0
    formatted = json.loads(JsonFormatter().format(record))
    assert formatted["ts"] == "2025-11-28T16:27:03.045+00:00"
    [line] = lines(stream)
    assert len(line["ts"]) == len(formatted["ts"]) and line["ts"].endswith("+00:00")


@pytest.mark.parametrize("setup", ["second handler", "plain handler", "unknown filter",
                                   "logger filter", "handler above info"])
def test_any_other_configuration_gets_a_real_record(logger: logging.Logger,
                                                    setup: str) -> None:
    stream = io.StringIO()
    handler = JsonLinesHandler(stream)
    logger.addHandler(handler)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    if setup == "second handler":
        logger.addHandler(Keep())
    elif setup == "plain handler":
        logger.handlers[:] = [Keep()]
    elif setup == "unknown filter":
        handler.addFilter(lambda r: setattr(r, "tag", "seen") or True)
    elif setup == "logger filter":
        logger.addFilter(lambda r: setattr(r, "tag", "seen") or True)
    else:
        handler.setLevel(logging.WARNING)
    AccessLine(logger, annotators=(Annotate,)).line("GET / 200", dict(FIELDS))
    written = lines(stream)
    if setup in ("second handler", "plain handler"):
        assert [(r.getMessage(), r.request_id) for r in records] == [("GET / 200", "r-1")]
    if setup in ("unknown filter", "logger filter"):
        assert [x["tag"] for x in written] == ["seen"]  # the filter ran on a record
    if setup == "handler above info":
        assert written == []
