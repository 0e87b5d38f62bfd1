"""Lossless FHIR JSON.

FHIR requires decimals to keep their precision (`72.50` stays `72.50`). A float round trip
loses it, so decimals are parsed as `Decimal` and written back from their own text through
`orjson.Fragment`. Stored resources are written once by `dumps` and afterwards served as
bytes; embed stored bytes in a larger document (a Bundle) with `raw`.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from fhirpm.errors import Category, FhirError

_decoder = json.JSONDecoder(parse_float=Decimal)


def loads(data: bytes | str) -> Any:
    """Parse JSON keeping decimals exact; raise FhirError(400) on malformed input."""
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes | bytearray) else data
        return _decoder.decode(text)
    except UnicodeDecodeError as exc:
        raise FhirError(Category.STRUCTURE, f"Body is not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise FhirError(
            Category.STRUCTURE,
            f"Malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
        ) from None
    except RecursionError:
        raise FhirError(Category.STRUCTURE, "JSON nested too deeply") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise TypeError("non-finite decimal")
        return orjson.Fragment(str(obj))
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, *, pretty: bool = False, sort_keys: bool = False) -> bytes:
    """Serialise with exact decimals; `pretty` indents by two spaces."""
    option = (orjson.OPT_INDENT_2 if pretty else 0) | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    return orjson.dumps(obj, default=_default, option=option)


def raw(data: bytes) -> orjson.Fragment:
    """Already-serialised JSON (a stored resource) to embed in a document without re-parsing."""
    return orjson.Fragment(data)
