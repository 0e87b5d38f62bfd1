"""Building response Bundles around stored bytes without re-parsing them."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from fhirpm.fhir import jsonio


def bundle(type: str, entries: list[dict[str, Any]], *, total: int | None = None,
           links: list[tuple[str, str]] = (), timestamp: str | None = None) -> bytes:
    out: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                           "meta": {}, "type": type}
    if timestamp:
        out["meta"]["lastUpdated"] = timestamp
        out["timestamp"] = timestamp
    else:
        del out["meta"]
    if total is not None:
        out["total"] = total
    if links:
        out["link"] = [{"relation": rel, "url": url} for rel, url in links]
    out["entry"] = entries
    if not entries:
        del out["entry"]
    return jsonio.dumps(out)


def page_url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base}/{path}" if path else base
    return f"{url}?{urlencode(params)}" if params else url
