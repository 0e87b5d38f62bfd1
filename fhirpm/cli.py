"""Command line: `fhirpm serve`, `fhirpm load`."""

from __future__ import annotations

import argparse
import os
import sys

from fhirpm.config import Settings


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

    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_json)
    store_where = settings.store_url
    if store_where.startswith("sqlite:///"):
        store_where = os.path.abspath(store_where[len("sqlite:///"):])
    print(f"fhirpm FHIR R4 server: {settings.fhir_base}", flush=True)
    print(f"data: {store_where}", flush=True)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                access_log=False, lifespan="on")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhirpm", description="FHIR R4 practice server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the FHIR server")
    serve.add_argument("--host", help="listen address (default 127.0.0.1, FHIRPM_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default 8080, FHIRPM_PORT)")
    serve.add_argument("--store-url", dest="store_url",
                       help="store URL (default sqlite:///./var/fhirpm.db, FHIRPM_STORE_URL)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
