"""Wiring the audit trail into a server: the two calls the composition root makes.

`install(interactions, settings)` puts the Recorder in front of `Interactions.dispatch`
(every Interactions the app or the CLI builds records its requests); `connect(...)` gives
it what only the running app has: the current HTTP exchange (request id, client address),
the periodic retention job, the authorization server's hooks and the journal, which
`start` opens (sealing the journals of processes that died) and `stop` empties.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fhirpm.audit import events as ev
from fhirpm.audit import maintenance, record
from fhirpm.audit.journal import Journal
from fhirpm.audit.recorder import Recorder
from fhirpm.audit.security import AuditHooks
from fhirpm.audit.trail import Trail
from fhirpm.audit.view import AuditView
from fhirpm.repository.service import now_instant

if TYPE_CHECKING:
    from fhirpm.config import AuditSettings, Settings
    from fhirpm.jobs import Jobs
    from fhirpm.repository.interactions import Interactions
    from fhirpm.storage.port import ResourceStore

log = logging.getLogger("fhirpm.audit")

RETENTION_JOB = "audit-retention"


def trail_for(store: ResourceStore, settings: AuditSettings) -> Trail:
    key = settings.hmac_key.encode() if settings.hmac_key else None
    return Trail(store, key=key)


def install(interactions: Interactions, settings: Settings) -> Recorder | None:
    """Serve AuditEvents from the audit log, and record every request `interactions`
    dispatches (None when the trail is off)."""
    repo = interactions.repo
    store = repo.store
    view = AuditView(store, repo.indexer)
    repo.store = view  # type: ignore[assignment]
    conf = settings.audit
    if not conf.enabled:
        return None
    trail = trail_for(store, conf)
    view.settle = trail.settle
    recorder = Recorder(trail,
                        ev.Server(settings.fhir_base, site=conf.site), repo.indexer,
                        fail_closed=conf.fail_closed, batch_max=conf.batch_max)
    recorder.hooks = AuditHooks(recorder)
    interactions.observer = recorder
    return recorder


def connect(interactions: Interactions, settings: Settings, *, jobs: Jobs,
            exchange: Callable[[], Any] | None = None, auth: Any = None,
            metrics: Any = None) -> None:
    """Hook the installed recorder to the running app (nothing when the trail is off):
    `metrics` (fhirpm.ops.metrics.Registry) gets the group commit's counters."""
    recorder = interactions.observer
    if not isinstance(recorder, Recorder):
        return
    if metrics is not None:
        groups = metrics.counter("fhirpm_audit_group_commits_total",
                                 "commits of reads' and failures' audit records (group commit)")
        records = metrics.counter("fhirpm_audit_group_records_total",
                                  "audit records those commits stored (records / commits: "
                                  "how many requests share a commit)")

        def committed(size: int) -> None:
            groups.inc(())
            records.inc((), size)
        recorder.batch.on_commit = committed
    if exchange is not None:
        recorder.exchange = exchange
    directory = journal_dir(recorder.trail.store, settings.audit)
    if directory is not None:
        journal = Journal(directory, recorder.trail.store, recorder.trail.seal,
                          record.draft_of, sync=settings.audit.journal_sync)
        recorder.trail.journal = journal
        if metrics is not None:
            async def unsealed() -> list[tuple[tuple[()], int]]:
                return [((), await journal.unsealed())]
            metrics.gauge("fhirpm_audit_journal_unsealed_bytes",
                          "this process's audit records durable in its journal, not yet "
                          "sealed into the chain (the sealer's lag)").callback = unsealed
    if auth is not None:
        auth.audit = recorder.hooks
    if settings.audit.retention_days > 0:
        days = settings.audit.retention_days

        async def retention() -> None:
            await purge_now(recorder, days)
        jobs.every(RETENTION_JOB, settings.audit.purge_interval_seconds, retention)


def journal_dir(store: ResourceStore, conf: AuditSettings) -> str | None:
    """Where this process journals records: the setting, else beside a SQLite file (a
    MongoDB deployment's API nodes have no shared disk: no journal unless one is set)."""
    if not conf.journal:
        return None
    if conf.journal_dir:
        return conf.journal_dir
    path = getattr(store, "path", None)
    if isinstance(path, str) and path and path != ":memory:":
        return f"{path}-audit-journal"
    return None


async def start(interactions: Interactions) -> None:
    """At startup, after the store opened: this process's journal, once the journals of
    processes that stopped without emptying theirs are sealed into the chain."""
    recorder = interactions.observer
    if isinstance(recorder, Recorder) and recorder.trail.journal is not None:
        await recorder.trail.journal.open()


async def stop(interactions: Interactions) -> None:
    """At shutdown, before the store closes: everything journaled sealed into the chain."""
    recorder = interactions.observer
    if isinstance(recorder, Recorder) and recorder.trail.journal is not None:
        await recorder.trail.journal.close()


async def purge_now(recorder: Recorder, retention_days: int) -> maintenance.Purged:
    """One retention run: purge, then record that it happened (in the chain it purged)."""
    result = await maintenance.purge(recorder.trail, maintenance.cutoff(retention_days))
    if result.refused:
        log.error("audit retention refused to purge: the chain does not verify (%s); "
                  "run `fhirpm audit verify`", result.refused)
    if result.removed or result.refused:
        outcome = ev.Outcome(500, result.refused) if result.refused else ev.Outcome(200)
        text = (f"purged {result.removed} events older than {retention_days} days; "
                f"checkpoint seq {result.checkpoint.seq} hash {result.checkpoint.hash}")
        await recorder.record([ev.trail_event("purge", recorder.who(client_id="fhirpm"),
                                              recorder.server, outcome, now_instant(),
                                              description=text)])
    return result
