"""Open the store a URL names: `sqlite:///path.db` (default) or, later, `mongodb://...`."""

from __future__ import annotations

from fhirpm.config import Settings
from fhirpm.storage.port import ResourceStore


def store_from_settings(settings: Settings) -> ResourceStore:
    url = settings.store_url
    if url.startswith("sqlite:"):
        from fhirpm.storage.sqlite import SqliteResourceStore

        return SqliteResourceStore.from_url(url, readers=settings.sqlite_readers)
    raise ValueError(f"Unsupported store URL {url!r}: use sqlite:///path/to/file.db")
