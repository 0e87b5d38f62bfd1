"""Value normalisation shared by index extraction and query parsing: how strings fold, how a
reference string splits into type/id/url, and the implicit range of a decimal.

Both sides of a search (the indexed value and the client's parameter) must go through the
same function, so these live in one place and know nothing of parameters or stores.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from fhirpm.fhir.types import RESOURCE_TYPES


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Lower-case, strip accents (NFKD without combining marks), collapse whitespace."""
    if text.isascii():
        folded = text.lower()
    else:
        decomposed = unicodedata.normalize("NFKD", text)
        folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(folded.split())


def split_reference(ref: str) -> tuple[str | None, str | None, str | None, str | None]:
    """A reference or canonical string -> (type, id, url, version).

    `Patient/1` and `Patient/1/_history/2` -> type and id; an absolute URL whose path ends in
    `<ResourceType>/<id>` (optionally `/_history/<v>`) -> type, id and the URL (without the
    history part); any other absolute URL or canonical -> the URL only, a `|version` suffix
    split off. A contained `#id` gives nothing.
    """
    if not ref or ref.startswith("#"):
        return None, None, None, None
    if "?" in ref:  # a search URL (conditional reference), not a location
        return None, None, ref, None
    version = None
    if "|" in ref:
        ref, version = ref.split("|", 1)
    absolute = "://" in ref or ref.startswith("urn:")
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
        if absolute:
            ref = "/".join(parts)
    if len(parts) >= 2 and parts[-2] in RESOURCE_TYPES and parts[-1]:
        if not absolute and len(parts) == 2:
            return parts[0], parts[1], None, version
        if absolute:
            return parts[-2], parts[-1], ref, version
    return None, None, ref, version


def decimal_bounds(value: Decimal | int | float | str) -> tuple[float, float, float] | None:
    """(value, lo, hi): the range the value's written precision implies.

    `1.5` -> [1.45, 1.55]; `100` -> [99.5, 100.5]; `1e2` -> [50, 150]. Floats (not produced
    by the lossless JSON reader) are taken at face value.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value, value, value
    try:
        exact = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None
    if not exact.is_finite():
        return None
    half = Decimal(5).scaleb(exact.as_tuple().exponent - 1)
    return float(exact), float(exact - half), float(exact + half)
