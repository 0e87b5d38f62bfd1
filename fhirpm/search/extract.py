"""Write-time extraction of search index values (see `search.values`).

First cut: only the parameters every resource has (`_id`, `_lastUpdated`); the search issue
compiles every registered parameter's FHIRPath expression into an extractor.
"""

from __future__ import annotations

from typing import Any, Protocol

from fhirpm.search.values import DateValue, IndexEntry, TokenValue


class Indexer(Protocol):
    def extract(self, type: str, resource: dict[str, Any]) -> list[IndexEntry]: ...


def instant_to_micros(instant: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(instant).timestamp() * 1_000_000)


class BasicIndexer:
    def extract(self, type: str, resource: dict[str, Any]) -> list[IndexEntry]:
        entries = [IndexEntry("_id", TokenValue(None, resource["id"]))]
        last_updated = resource.get("meta", {}).get("lastUpdated")
        if last_updated:
            at = instant_to_micros(last_updated)
            entries.append(IndexEntry("_lastUpdated", DateValue(at, at)))
        return entries
