"""`fhirpm store copy SRC DST`: move every version of every resource from one store to
another (the path from the embedded SQLite file to MongoDB when a practice grows).

The source's change log is replayed into the destination in seq order, a batch of versions
per unit of work, through the port only, so any pair of adapters works. Bodies and
timestamps are copied byte for byte; index entries are extracted again by the indexer the
server uses (the destination's index layout is its own business); the destination assigns
its own seqs.

Resumable: after each batch the source seq reached is recorded in the destination
(document `fhirpm.copy/<source>`), and versions the destination already holds are skipped,
so a copy killed at any moment continues where it stopped. At the end the number of
versions and of live resources per type must agree on both sides.

The audit log is copied entry by entry with its seqs and seals unchanged (the chain must
still verify in the destination), after the entries the destination already holds.

Small documents (auth clients and users, HL7 v2 message logs, job state) are copied for
the collections named with `--documents` (the port cannot enumerate collections); their
revs start afresh in the destination. Not copied: unique conditional-create keys (claimed
again by new writes; existing resources are found by search) and change-feed cursors (seqs
differ between stores: consumers start from the beginning of the new log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhirpm.config import Settings
from fhirpm.fhir import jsonio
from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.search.extract import Indexer
from fhirpm.search.query import SearchQuery
from fhirpm.storage.factory import store_from_settings
from fhirpm.storage.port import (
    AuditSpan,
    HistoryQuery,
    ResourceStore,
    ResourceVersion,
    StoreError,
    UnitOfWork,
)

PROGRESS = "fhirpm.copy"


class CopyError(Exception):
    """The destination disagrees with the source (diverged data or a failed check)."""


@dataclass
class CopyReport:
    copied: int = 0  # versions written by this run
    skipped: int = 0  # versions the destination already had (a resumed copy)
    documents: int = 0  # small documents copied
    versions: dict[str, int] = field(default_factory=dict)  # per type, verified equal
    live: dict[str, int] = field(default_factory=dict)  # live resources per type, verified
    audit: int = 0  # audit log entries copied


async def copy_store(source: ResourceStore, destination: ResourceStore, indexer: Indexer,
                     *, source_name: str, types: Iterable[str], batch: int = 500,
                     progress: Callable[[int], None] | None = None,
                     documents: Sequence[str] = ()) -> CopyReport:
    """Copy everything from `source` into `destination` (both open); `types` lists the
    resource types to verify, `documents` the document collections to copy.
    `progress(n)` is called as versions are handled."""
    report = CopyReport()
    for collection in documents:
        report.documents += await copy_documents(source, destination, collection)
    resumed = await resume_point(destination, source_name)
    after, handled = resumed or (0, 0)
    if resumed is None and await destination.history_count(HistoryQuery()):
        raise CopyError("the destination already holds resources (and no interrupted copy "
                        "from this source): copy into an empty store")
    while True:
        versions = await source.changes(after, batch)
        if not versions:
            break
        async with destination.unit_of_work() as uow:
            copied = await _copy_batch(uow, versions, indexer)
        after, handled = versions[-1].seq, handled + len(versions)
        await destination.doc_put(PROGRESS, source_name,
                                  json.dumps({"after": after, "handled": handled}).encode())
        report.copied += copied
        report.skipped += len(versions) - copied
        if progress is not None:
            progress(len(versions))
    report.audit = await copy_audit_log(source, destination, batch)
    await verify(source, destination, types, report)
    return report


async def copy_audit_log(source: ResourceStore, destination: ResourceStore,
                         batch: int = 500) -> int:
    """The audit log's entries the destination lacks, unchanged (resumable)."""
    have = await destination.audit_head()
    after = have.seq if have is not None else 0
    copied = 0
    while True:
        entries = await source.audit_list(AuditSpan(after=after, limit=batch))
        if not entries:
            return copied
        await destination.audit_restore(entries)
        copied += len(entries)
        after = entries[-1].seq


async def copy_documents(source: ResourceStore, destination: ResourceStore,
                         collection: str) -> int:
    """Every live document of one collection (idempotent: a resumed copy rewrites them)."""
    if collection == PROGRESS:
        return 0
    docs = await source.doc_list(collection, "", limit=2**31)
    for doc in docs:
        await destination.doc_put(collection, doc.key, doc.body, expires_at=doc.expires_at)
    return len(docs)


async def resume_point(destination: ResourceStore,
                       source_name: str) -> tuple[int, int] | None:
    """(source seq reached, versions handled) of an earlier run; None for a new copy."""
    doc = await destination.doc_get(PROGRESS, source_name)
    if doc is None:
        return None
    state = json.loads(doc.body)
    return int(state["after"]), int(state.get("handled", 0))


async def _copy_batch(uow: UnitOfWork, versions: Sequence[ResourceVersion],
                      indexer: Indexer) -> int:
    newest = {(v.type, v.id): v.version for v in versions}
    copied = 0
    for v in versions:
        current = await uow.current(v.type, v.id)
        have = current.version if current else 0
        if current is not None and have == v.version and (
                current.body, current.last_updated) != (v.body, v.last_updated):
            raise CopyError(f"{v.type}/{v.id}: the destination's version {have} differs from "
                            "the source's; the destination has diverged")
        if have >= v.version:
            continue  # copied by an earlier, interrupted run
        if have != v.version - 1:
            raise CopyError(f"{v.type}/{v.id}: the destination holds version {have}, the "
                            f"source's next is {v.version}; the destination has diverged")
        # only the newest version of a batch keeps its index entries: extract just that one
        entries = (indexer.extract(v.type, _parsed(v))
                   if not v.deleted and newest[(v.type, v.id)] == v.version else [])
        await uow.put(ResourceVersion(v.type, v.id, v.version, v.last_updated, v.method,
                                      v.body), entries, expected_version=have)
        copied += 1
    return copied


def _parsed(v: ResourceVersion) -> dict[str, Any]:
    return jsonio.loads(v.body)


async def verify(source: ResourceStore, destination: ResourceStore, types: Iterable[str],
                 report: CopyReport) -> None:
    """Versions and live resources per type must be equal on both sides."""
    problems = []
    for type in sorted(types):
        versions = [await source.history_count(HistoryQuery(type)), 0]
        if versions[0]:  # the total below catches anything in types the source lacks
            versions[1] = await destination.history_count(HistoryQuery(type))
            live = [await _live(s, type) for s in (source, destination)]
            if versions[0] != versions[1] or live[0] != live[1]:
                problems.append(f"{type}: versions {versions[0]} -> {versions[1]}, "
                                f"live {live[0]} -> {live[1]}")
            report.versions[type] = versions[0]
            report.live[type] = live[0]
    total = [await s.history_count(HistoryQuery()) for s in (source, destination)]
    if total[0] != total[1]:
        problems.append(f"all types: versions {total[0]} -> {total[1]}")
    if problems:
        raise CopyError("the copy does not match its source: " + "; ".join(problems))


async def _live(store: ResourceStore, type: str) -> int:
    result = await store.search(SearchQuery(types=(type,), count=0, total="accurate"))
    return result.total or 0


# -- the command line: `fhirpm store copy SRC_URL DST_URL` ------------------------------------

IndexerFor = Callable[[Settings, ResourceStore], Indexer]


def install(sub: argparse._SubParsersAction, indexer_for: IndexerFor) -> None:
    """Add `store copy` to the CLI; `indexer_for(settings, store)` gives the server's
    indexer (the composition root knows it)."""
    store = sub.add_parser("store", help="store maintenance")
    actions = store.add_subparsers(dest="store_command", required=True)
    copy = actions.add_parser(
        "copy", help="copy every version of every resource into another store (resumable)",
        description="Copy all resources, every version, from SRC_URL to DST_URL (e.g. "
                    "sqlite:///./var/fhirpm.db to mongodb://host/fhirpm?replicaSet=rs0). "
                    "Run it again after an interruption to continue; it verifies counts.")
    copy.add_argument("source", metavar="SRC_URL")
    copy.add_argument("destination", metavar="DST_URL")
    copy.add_argument("--batch", type=int, default=500,
                      help="versions per unit of work in the destination (default 500)")
    copy.add_argument("--documents", default="", metavar="NAME,...",
                      help="document collections to copy too (auth clients and users, HL7 "
                           "v2 logs, ...: see docs/deploy.md)")
    copy.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar (it is also off when stderr is not a terminal)")
    copy.set_defaults(func=lambda args: run_command(args, indexer_for))


def run_command(args: argparse.Namespace, indexer_for: IndexerFor) -> int:
    if args.source == args.destination:
        print("fhirpm store copy: source and destination are the same store", file=sys.stderr)
        return 2
    if args.batch < 1:
        print("fhirpm store copy: --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_run(args, indexer_for))
    except (CopyError, StoreError, ValueError) as exc:
        print(f"fhirpm store copy: {exc}", file=sys.stderr)
        return 1
    print(f"copied {report.copied} versions ({report.skipped} already there), "
          f"{report.audit} audit log entries and {report.documents} documents; verified "
          f"{sum(report.versions.values())} versions "
          f"and {sum(report.live.values())} live resources in {len(report.versions)} types",
          flush=True)
    return 0


async def _run(args: argparse.Namespace, indexer_for: IndexerFor) -> CopyReport:
    from tqdm import tqdm

    settings = Settings()
    source = store_from_settings(settings.model_copy(update={"store_url": args.source}))
    destination = store_from_settings(
        settings.model_copy(update={"store_url": args.destination}))
    await source.open()
    try:
        await destination.open()
        try:
            name = redact(args.source)
            total = await source.history_count(HistoryQuery())
            _, handled = await resume_point(destination, name) or (0, 0)
            with tqdm(total=total, initial=handled, unit="version", desc="copying",
                      disable=None if args.progress else True, file=sys.stderr) as bar:
                return await copy_store(
                    source, destination, indexer_for(settings, destination), source_name=name,
                    types=RESOURCE_TYPES, batch=args.batch, progress=bar.update,
                    documents=[c for c in args.documents.split(",") if c])
        finally:
            await destination.close()
    finally:
        await source.close()


def redact(url: str) -> str:
    """A store URL without credentials (it names the copy's progress record)."""
    return re.sub(r"//[^@/]*@", "//", url)
