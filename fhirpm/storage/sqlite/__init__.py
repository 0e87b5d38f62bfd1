"""SQLite adapter (embedded default)."""

from fhirpm.storage.sqlite.store import SqliteResourceStore

__all__ = ["SqliteResourceStore"]
