"""Open the store a URL names: `sqlite:///path.db` (default) or `mongodb://...`."""

from __future__ import annotations

from fhirpm.config import Settings
from fhirpm.storage.port import ResourceStore


def store_from_settings(settings: Settings) -> ResourceStore:
    url = settings.store_url
    if url.startswith("sqlite:"):
        from fhirpm.storage.sqlite import SqliteResourceStore

        return SqliteResourceStore.from_url(url, readers=settings.sqlite_readers)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from fhirpm.storage.mongo import MongoResourceStore

        return MongoResourceStore.from_url(
            url, allow_no_transactions=settings.mongo_allow_no_transactions)
    raise ValueError(f"Unsupported store URL {url!r}: use sqlite:///path/to/file.db or "
                     "mongodb://host:port/database")
