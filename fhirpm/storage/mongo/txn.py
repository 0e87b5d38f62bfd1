"""Transactions: the start-up probe, which failures a replay can cure, and driver errors.

Servers report a lost race in two ways, and both must end in a replay of the unit of work:
- MongoDB fails the second conflicting write at once with WriteConflict (code 112),
  labelled `TransientTransactionError` (so do network errors inside a transaction and
  catalog changes under a running transaction);
- a server may instead accept the writes and refuse the commit. A commit the server refused
  (an OperationFailure without the `UnknownTransactionCommitResult` label) definitively did
  not happen, so re-running the unit is safe too.
A commit whose outcome is unknown (network error while committing) is retried as a commit,
never replayed: replaying a unit that did commit would write it twice.
"""

from __future__ import annotations

import asyncio
import random

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
)

from fhirpm.storage.mongo import schema
from fhirpm.storage.port import StoreError

TRANSIENT_LABEL = "TransientTransactionError"
UNKNOWN_COMMIT_LABEL = "UnknownTransactionCommitResult"
# WriteConflict, LockTimeout, SnapshotUnavailable, SnapshotTooOld, NoSuchTransaction
TRANSIENT_CODES = frozenset({112, 24, 246, 239, 251})

MAX_ATTEMPTS = 10


class CommitRefused(Exception):
    """The server refused to commit: nothing of the transaction was applied."""

    def __init__(self, cause: OperationFailure) -> None:
        super().__init__(str(cause))
        self.cause = cause


def is_transient(exc: BaseException) -> bool:
    """True when re-running the whole unit of work in a new transaction may succeed."""
    if isinstance(exc, CommitRefused):
        return True
    if isinstance(exc, PyMongoError):
        if exc.has_error_label(TRANSIENT_LABEL):
            return True
        if isinstance(exc, OperationFailure) and exc.code in TRANSIENT_CODES:
            return True
    return False


async def backoff(attempt: int) -> None:
    """Jittered exponential pause between replays, so racing writers stop colliding."""
    await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.25)))


def gave_up(what: str) -> StoreError:
    return StoreError(f"{what}: gave up after {MAX_ATTEMPTS} attempts lost to concurrent "
                      "writers")


def unavailable(exc: PyMongoError, where: str) -> StoreError:
    """A driver failure as a StoreError the repository can report (no credentials in it)."""
    if isinstance(exc, ConnectionFailure):
        return StoreError(f"MongoDB is unreachable ({where}): {type(exc).__name__}")
    return StoreError(f"MongoDB failed ({where}): {exc}")


async def probe(db: AsyncDatabase) -> str | None:
    """Run one real transaction; None if it committed, else the server's reason.

    The deployment is asked rather than guessed from its topology: a standalone mongod
    refuses (code 20, "Transaction numbers are only allowed on a replica set member or
    mongos"), a replica set or sharded cluster commits."""
    client = db.client
    try:
        async with client.start_session() as session, await session.start_transaction():
            await db[schema.COUNTERS].update_one(
                {"_id": "transaction-probe"}, {"$inc": {"n": 1}}, upsert=True,
                session=session)
    except (OperationFailure, ConfigurationError) as exc:
        return str(exc)
    return None


NO_TRANSACTIONS_HELP = (
    "fhirpm needs multi-document transactions for atomic writes (transaction bundles, "
    "conditional create, versioning), and MongoDB runs them only on a replica set or a "
    "sharded cluster. Run MongoDB as a replica set: a one-node replica set is enough "
    "(`mongod --replSet rs0`, then `rs.initiate()` once; docker/compose.yaml does this), "
    "and add `?replicaSet=rs0` to FHIRPM_STORE_URL. To run without atomic units of work "
    "anyway, set FHIRPM_MONGO_ALLOW_NO_TRANSACTIONS=true (see docs/deploy.md for what that "
    "gives up)."
)


def refuse_without_transactions(reason: str, where: str) -> StoreError:
    return StoreError(f"MongoDB at {where} does not accept a transaction ({reason}). "
                      f"{NO_TRANSACTIONS_HELP}")
