"""The FHIR endpoint builds its FhirRequest without the dataclass constructor (a read's
hot path): what it builds must equal, and be as immutable as, the ordinary one."""

from __future__ import annotations

import dataclasses

import pytest

from fhirpm.api import routes
from fhirpm.repository.interactions import FhirRequest


def test_the_edge_builds_the_request_the_constructor_would() -> None:
    args = ("GET", "Patient/1", "http://x/fhir", (("_summary", "true"),),
            {"accept": "application/fhir+json"}, b"{}", "someone")
    built = routes._new_request(*args)
    plain = FhirRequest(method=args[0], path=args[1], base=args[2], params=args[3],
                        headers=args[4], body=args[5], principal=args[6])
    assert type(built) is FhirRequest and built == plain
    assert [getattr(built, f.name) for f in dataclasses.fields(FhirRequest)] == [
        getattr(plain, f.name) for f in dataclasses.fields(FhirRequest)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.principal = None  # type: ignore[misc]
    assert dataclasses.replace(built, path="Patient/2").path == "Patient/2"


def test_the_short_cut_is_taken_while_it_knows_every_field() -> None:
    known = tuple(f.name for f in dataclasses.fields(FhirRequest)) == routes._KNOWN_FIELDS
    assert (routes._new_request is not routes._plain_request) == known
