"""A small Prometheus registry: counters, histograms and callback gauges, rendered in the
text exposition format (version 0.0.4) at /metrics.

Hot-path cost is a dict lookup and a few additions: series are keyed by their label-value
tuple, histogram buckets found by bisection; all updates happen on the event loop thread.
Other parts register what only they can measure (queue depths, HL7 messages by status) as
callbacks, sync or async, that the registry calls at scrape time:

    metrics.callback("fhirpm_hl7_messages", "HL7 v2 messages by status", ("status",),
                     count_by_status)   # returns [(("AA",), 12.0), (("AE",), 1.0)]

This module knows nothing of HTTP or FHIR.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("fhirpm.ops.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# seconds; from a cached read (~0.5 ms) to a large transaction bundle
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
Labels = tuple[str, ...]
Samples = Iterable[tuple[Labels, float]]
Callback = Callable[[], Samples | Awaitable[Samples]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Counter:
    name: str
    help: str
    labels: Labels = ()
    series: dict[Labels, float] = field(default_factory=dict)

    def inc(self, values: Labels = (), amount: float = 1.0) -> None:
        self.series[values] = self.series.get(values, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for values, total in sorted(self.series.items()):
            lines.append(f"{self.name}{_labels(self.labels, values)} {_number(total)}")
        return lines


@dataclass
class Histogram:
    name: str
    help: str
    labels: Labels = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    # per label values: [count per bucket..., count above the last bucket, sum]
    series: dict[Labels, list[float]] = field(default_factory=dict)

    def observe(self, values: Labels, amount: float) -> None:
        row = self.series.get(values)
        if row is None:
            row = self.row(values)
        row[bisect_left(self.buckets, amount)] += 1
        row[-1] += amount

    def row(self, values: Labels) -> list[float]:
        """The series of `values` (made empty if new), for a caller that observes one
        series often: `row[bisect_left(buckets, amount)] += 1; row[-1] += amount`."""
        found = self.series.get(values)
        if found is None:
            found = self.series[values] = [0.0] * (len(self.buckets) + 2)
        return found

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for values, row in sorted(self.series.items()):
            running = 0.0
            for bound, count in zip((*self.buckets, math.inf), row[:-1], strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labels, values, le)} "
                             f"{_number(running)}")
            lines.append(f"{self.name}_sum{_labels(self.labels, values)} {_number(row[-1])}")
            lines.append(f"{self.name}_count{_labels(self.labels, values)} "
                         f"{_number(running)}")
        return lines


@dataclass
class Gauge:
    """A gauge read at scrape time from a callback (or set directly when it has none)."""

    name: str
    help: str
    labels: Labels = ()
    callback: Callback | None = None
    series: dict[Labels, float] = field(default_factory=dict)

    def set(self, values: Labels, value: float) -> None:
        self.series[values] = value

    def add(self, values: Labels, amount: float) -> None:
        self.series[values] = self.series.get(values, 0.0) + amount

    async def collect(self) -> dict[Labels, float]:
        if self.callback is None:
            return dict(self.series)
        found = self.callback()
        if inspect.isawaitable(found):
            found = await asyncio.wait_for(found, 5.0)
        return {tuple(str(v) for v in values): float(value) for values, value in found}

    def render(self, samples: dict[Labels, float]) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        for values, value in sorted(samples.items()):
            lines.append(f"{self.name}{_labels(self.labels, values)} {_number(value)}")
        return lines


class Requests:
    """Requests counted by labels and status, and their latency by labels, kept as one row
    per (labels, status): recording a request is one dict lookup, a bisection and two
    additions. Scrapes render the two families (`_total` by labels and status, the
    histogram by labels) as a Counter and a Histogram would."""

    def __init__(self, count: Counter, latency: Histogram) -> None:
        self.count = count
        self.latency = latency
        self.buckets = latency.buckets
        self.rows: dict[tuple[str, str, int], list[float]] = {}

    def record(self, interaction: str, type_: str, status: int, seconds: float) -> None:
        row = self.rows.get((interaction, type_, status))
        if row is None:
            row = self.rows[(interaction, type_, status)] = [0.0] * (len(self.buckets) + 2)
        row[bisect_left(self.buckets, seconds)] += 1
        row[-1] += seconds

    def render_count(self) -> list[str]:
        counter = Counter(self.count.name, self.count.help, self.count.labels)
        for (interaction, type_, status), row in self.rows.items():
            counter.inc((interaction, type_, str(status)), sum(row[:-1]))
        return counter.render()

    def render_latency(self) -> list[str]:
        histogram = Histogram(self.latency.name, self.latency.help, self.latency.labels,
                              self.buckets)
        merged = histogram.series
        for (interaction, type_, _), row in self.rows.items():
            into = merged.setdefault((interaction, type_), [0.0] * len(row))
            for n, value in enumerate(row):
                into[n] += value
        return histogram.render()


@dataclass
class _Rendered:
    """A family whose lines another object renders (the two halves of `Requests`)."""

    name: str
    render: Callable[[], list[str]]


class Registry:
    """Every metric family of one app; names are unique."""

    def __init__(self) -> None:
        self._families: dict[str, Counter | Histogram | Gauge | _Rendered] = {}

    def requests(self, count: tuple[str, str], latency: tuple[str, str],
                 labels: Labels) -> Requests:
        """A request counter (`labels` + status) and latency histogram (`labels`):
        (name, help) each."""
        found = Requests(Counter(*count, (*labels, "status")), Histogram(*latency, labels))
        self._add(_Rendered(count[0], found.render_count))
        self._add(_Rendered(latency[0], found.render_latency))
        return found

    def _add[M: (Counter, Histogram, Gauge, _Rendered)](self, family: M) -> M:
        if family.name in self._families:
            raise ValueError(f"metric {family.name} is already registered")
        self._families[family.name] = family
        return family

    def counter(self, name: str, help: str, labels: Labels = ()) -> Counter:
        return self._add(Counter(name, help, labels))

    def histogram(self, name: str, help: str, labels: Labels = (),
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help, labels, tuple(sorted(buckets))))

    def gauge(self, name: str, help: str, labels: Labels = ()) -> Gauge:
        return self._add(Gauge(name, help, labels))

    def callback(self, name: str, help: str, labels: Labels, callback: Callback) -> Gauge:
        """A gauge whose samples `callback()` returns at scrape time (may be async)."""
        return self._add(Gauge(name, help, labels, callback))

    async def render(self) -> bytes:
        """The text exposition of every family; a failing callback is logged and skipped."""
        lines: list[str] = []
        for family in self._families.values():
            if isinstance(family, Gauge):
                try:
                    samples = await family.collect()
                except Exception:
                    log.exception("metrics callback %s failed", family.name)
                    continue
                lines.extend(family.render(samples))
            else:
                lines.extend(family.render())
        return ("\n".join(lines) + "\n").encode()
