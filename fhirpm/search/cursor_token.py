"""The opaque `_cursor` token of search paging: a JSON array, URL-safe base64, no padding.

Each store adapter decides what its cursor holds (a snapshot, a keyset position) and checks
the fields' types; this module owns the wire form and the one refusal every adapter gives
for a token it did not issue."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from fhirpm.errors import Category, FhirError


def pack(fields: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()


def unpack(token: str, length: int) -> list[Any]:
    """The fields of a token with exactly `length` of them; anything else is refused."""
    try:
        fields = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise refused() from None
    if not isinstance(fields, list) or len(fields) != length:
        raise refused()
    return fields


def refused() -> FhirError:
    return FhirError(Category.INVALID, "_cursor is not a cursor this server issued for this "
                     "search", expression=("_cursor",))
