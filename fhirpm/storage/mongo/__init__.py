"""MongoDB adapter (scale-out path): PyMongo's async driver, one transaction per unit of work.

See `schema` for the layout, `unit` for atomicity and change-log ordering, docs/deploy.md for
running it (replica set, shard keys, backups).
"""

from fhirpm.storage.mongo.store import MongoResourceStore

__all__ = ["MongoResourceStore"]
