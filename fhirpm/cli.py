"""Command line: `fhirpm serve`, `fhirpm load`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from fhirpm.config import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from fhirpm.loader import LoadReport
    from fhirpm.search.extract import Indexer
    from fhirpm.storage.port import ResourceStore


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("host", "port", "store_url"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fhirpm import logs
    from fhirpm.app import create_app
    from fhirpm.ops import context, serving

    settings = _settings(args)
    if getattr(args, "mllp", False):
        settings = settings.model_copy(update={"hl7": settings.hl7.model_copy(
            update={"enabled": True})})
    try:
        settings = serving.with_tls(settings, args.tls_cert, args.tls_key)
    except ValueError as exc:
        print(f"fhirpm serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_json)
    context.install_log_filter()  # every log line written while serving names its request
    store_where = settings.store_url
    if store_where.startswith("sqlite:///"):
        store_where = os.path.abspath(store_where[len("sqlite:///"):])
    print(f"fhirpm FHIR R4 server: {settings.fhir_base}", flush=True)
    print(f"data: {store_where}", flush=True)
    app = create_app(settings)
    sealer = _audit_sealer(app, settings)
    try:
        uvicorn.run(app, **serving.uvicorn_options(settings))  # TLS, graceful shutdown
    finally:
        if sealer is not None:
            from fhirpm.audit import sealer as audit_sealer

            audit_sealer.stop(sealer)
    return 0


def _audit_sealer(app: Any, settings: Any) -> Any:
    """The process that seals the audit journal into the chain (fhirpm.audit.sealer), when
    the server keeps one."""
    observer = app.state.interactions.observer
    if getattr(getattr(observer, "trail", None), "journal", None) is None:
        return None
    from fhirpm.audit import sealer

    return sealer.start(settings)


def cmd_load(args: argparse.Namespace) -> int:
    """Load files through the same interactions as REST; print a summary; 1 on any error."""
    import asyncio
    from pathlib import Path

    from fhirpm import loader, logs

    settings = _settings(args)
    logs.configure("WARNING", settings.log_json)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"fhirpm load: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    files = loader.discover(Path(p) for p in args.paths)
    report = asyncio.run(_load(settings, files, args.progress))
    for line in loader.summary_lines(report):
        print(line)
    return 1 if report.errors else 0


async def _load(settings: Settings, files: list[Path], progress: bool) -> LoadReport:
    from tqdm import tqdm

    from fhirpm.app import build_interactions
    from fhirpm.loader import Loader, total_bytes
    from fhirpm.storage.factory import store_from_settings

    store = store_from_settings(settings)
    interactions = build_interactions(settings, store)
    await store.open()
    try:
        with tqdm(total=total_bytes(files), unit="B", unit_scale=True, desc="loading",
                  disable=None if progress else True, file=sys.stderr) as bar:
            return await Loader(interactions, settings.fhir_base, bar).load(files)
    finally:
        await store.close()


def _server_indexer(settings: Settings, store: ResourceStore) -> Indexer:
    """The index extraction the server itself uses (store copy re-extracts with it)."""
    from fhirpm.app import build_interactions

    return build_interactions(settings, store).repo.indexer


def _interactions(settings: Settings, store: Any) -> Any:
    from fhirpm.app import build_interactions

    return build_interactions(settings, store)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhirpm", description="FHIR R4 practice server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the FHIR server")
    serve.add_argument("--host", help="listen address (default 127.0.0.1, FHIRPM_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default 8080, FHIRPM_PORT)")
    serve.add_argument("--store-url", dest="store_url",
                       help="store URL (default sqlite:///./var/fhirpm.db, FHIRPM_STORE_URL)")
    serve.add_argument("--mllp", action="store_true",
                       help="also run the HL7 v2 MLLP listener (FHIRPM_HL7__PORT, default 2575)")
    serve.add_argument("--tls-cert", dest="tls_cert", metavar="PEM",
                       help="serve HTTPS with this certificate chain (FHIRPM_OPS__TLS_CERT)")
    serve.add_argument("--tls-key", dest="tls_key", metavar="PEM",
                       help="the certificate's private key (FHIRPM_OPS__TLS_KEY)")
    serve.set_defaults(func=cmd_serve)

    load = sub.add_parser("load", help="load FHIR files (Bundles, resources, NDJSON, folders)")
    load.add_argument("paths", nargs="+", metavar="PATH",
                      help="files (.json, .ndjson, .jsonl, optionally .gz) or folders")
    load.add_argument("--store-url", dest="store_url",
                      help="store URL (default sqlite:///./var/fhirpm.db, FHIRPM_STORE_URL)")
    load.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar (it is also off when stderr is not a terminal)")
    load.set_defaults(func=cmd_load)

    from fhirpm.storage import copy as store_copy  # store copy SRC_URL DST_URL

    store_copy.install(sub, _server_indexer)

    from fhirpm.auth import admin as auth_admin  # clients, users, launch, keys

    auth_admin.install(sub, _settings)
    from fhirpm.hl7v2 import cli as hl7_cli  # hl7 send | listen | replay | messages

    hl7_cli.install(sub, _settings, _interactions)
    from fhirpm.audit import cli as audit_cli  # audit verify | export | purge

    audit_cli.install(sub, _settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
