"""`fhirpm audit verify | export | purge`: the audit trail from the command line.

They open the store named by the settings (FHIRPM_STORE_URL or --store-url), also while a
server runs on it. `verify` exits 1 and names the first broken link when the chain does not
verify; `export` writes NDJSON (stdout or --out) of the events recorded in [--since,
--until); `purge` runs the retention job once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhirpm.audit.trail import Trail
    from fhirpm.config import Settings

SettingsFor = Callable[[argparse.Namespace], "Settings"]


def install(sub: Any, settings_for: SettingsFor) -> None:
    audit = sub.add_parser("audit", help="the audit trail: verify, export, purge")
    commands = audit.add_subparsers(dest="audit_command", required=True)

    def command(name: str, help: str, run: Callable[..., Awaitable[int]]) -> Any:
        parser = commands.add_parser(name, help=help)
        parser.add_argument("--store-url", dest="store_url",
                            help="store URL (default sqlite:///./var/fhirpm.db, "
                                 "FHIRPM_STORE_URL)")
        parser.set_defaults(func=lambda args: _run(run, args, settings_for(args)))
        return parser

    command("verify", "check the hash chain; exit 1 at the first broken link", _verify)
    export = command("export", "write AuditEvents as NDJSON (for a SIEM)", _export)
    export.add_argument("--since", help="recorded at or after (e.g. 2026-11-01 or a FHIR "
                                        "instant)")
    export.add_argument("--until", help="recorded before")
    export.add_argument("--out", help="file to write (default: stdout)")
    command("purge", "remove events older than FHIRPM_AUDIT__RETENTION_DAYS now", _purge)


def _run(run: Callable[..., Awaitable[int]], args: argparse.Namespace,
         settings: Settings) -> int:
    return asyncio.run(_with_trail(run, args, settings))


async def _with_trail(run: Callable[..., Awaitable[int]], args: argparse.Namespace,
                      settings: Settings) -> int:
    from fhirpm.audit.wiring import trail_for
    from fhirpm.storage.factory import store_from_settings

    store = store_from_settings(settings)
    await store.open()
    try:
        return await run(trail_for(store, settings.audit), args, settings)
    finally:
        await store.close()


async def _verify(trail: Trail, args: argparse.Namespace, settings: Settings) -> int:
    from fhirpm.audit.maintenance import verify

    report = await verify(trail)
    for line in report.lines():
        print(line, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


async def _export(trail: Trail, args: argparse.Namespace, settings: Settings) -> int:
    from fhirpm.audit.maintenance import export

    out = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115
    count = 0
    try:
        async for line in export(trail, args.since, args.until):
            out.write(line)
            count += 1
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
    print(f"exported {count} AuditEvents", file=sys.stderr)
    return 0


async def _purge(trail: Trail, args: argparse.Namespace, settings: Settings) -> int:
    from fhirpm.audit.maintenance import cutoff, purge

    days = settings.audit.retention_days
    if days <= 0:
        print("retention is off (FHIRPM_AUDIT__RETENTION_DAYS=0): nothing purged",
              file=sys.stderr)
        return 0
    result = await purge(trail, cutoff(days))
    if result.refused:
        print(f"purge refused: the chain does not verify ({result.refused})", file=sys.stderr)
        return 1
    print(f"purged {result.removed} AuditEvents older than {days} days "
          f"(checkpoint seq {result.checkpoint.seq})")
    return 0
