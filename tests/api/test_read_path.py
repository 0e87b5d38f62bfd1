"""The read path's short cuts answer exactly what the general code does.

`interactions.path_shape` classifies two-segment paths without its loop, `http_date` is
remembered per instant and `FhirRequest` is a slotted frozen dataclass: each must keep the
behaviour it had (the access gate and routing depend on the shape; immutability keeps a
handler from swapping the principal of a request)."""

from __future__ import annotations

import dataclasses

import pytest

from fhirpm.repository.interactions import FhirRequest
from fhirpm.repository.interactions import path_shape as _shape
from fhirpm.repository.service import http_date

# (path, shape) as the routing and access tables name them
SHAPES = [
    ("", ""),
    ("Patient", "T"),
    ("Patient/1", "T/I"),
    ("Patient/$validate", "T/$"),
    ("$export/x", "$/I"),
    ("$meta/$x", "$/$"),
    ("Patient/_history", "T/_history"),
    ("Patient/_search", "T/_search"),
    ("_history/1", "_history/I"),
    ("_search/1", "_search/I"),
    ("metadata/1", "metadata/I"),
    ("Patient/metadata", "T/metadata"),
    ("_history/_search", "_history/_search"),
    ("Patient/1/_history", "T/I/_history"),
    ("Patient/1/_history/2", "T/I/_history/V"),
    ("Patient/1/Observation", "T/I/C"),
    ("Patient/1/$everything", "T/I/$"),
    ("Patient/1/x/y", "T/I/C/?"),
]


@pytest.mark.parametrize(("path", "expected"), SHAPES)
def test_shape_classifies_paths(path: str, expected: str) -> None:
    assert _shape([p for p in path.split("/") if p]) == expected


@pytest.mark.parametrize(("instant", "expected"), [
    ("1994-11-06T08:49:37.000000Z", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ("2024-02-29T23:59:59.999999Z", "Thu, 29 Feb 2024 23:59:59 GMT"),
    ("2024-03-01T01:30:00+02:00", "Thu, 29 Feb 2024 23:30:00 GMT"),  # offsets convert
])
def test_http_date_is_the_same_on_every_call(instant: str, expected: str) -> None:
    assert [http_date(instant) for _ in range(3)] == [expected] * 3


def test_http_date_refuses_what_is_not_an_instant_every_time() -> None:
    for _ in range(2):  # a failure is not remembered as an answer
        with pytest.raises(ValueError):
            http_date("not a date")


def test_fhir_request_stays_immutable() -> None:
    req = FhirRequest(method="GET", path="Patient/1", base="http://x/fhir")
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.principal = None  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        req.extra = 1  # type: ignore[attr-defined]
    changed = dataclasses.replace(req, path="Patient/2")
    assert (changed.path, changed.method, req.path) == ("Patient/2", "GET", "Patient/1")
    assert req.headers == {} and FhirRequest("GET", "", "").headers is not req.headers
