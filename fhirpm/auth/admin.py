"""Administration from the command line: `fhirpm clients add|list`, `fhirpm users add`,
`fhirpm launch` (EHR launch) and `fhirpm keys rotate`.

Each command opens the configured store, does one thing through the AuthServer and prints
the result as JSON (so scripts can read client_id and client_secret); a secret is shown
only at creation. `fhirpm.cli` mounts these subcommands.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fhirpm.auth.server import AuthServer
from fhirpm.config import Settings
from fhirpm.errors import FhirError
from fhirpm.storage.factory import store_from_settings

SettingsFor = Callable[[argparse.Namespace], Settings]
Action = Callable[[AuthServer, argparse.Namespace], Awaitable[Any]]

_KINDS = {  # --type -> (token endpoint auth method, grant types)
    "public": ("none", None),
    "confidential": ("client_secret_basic", None),
    "asymmetric": ("private_key_jwt", None),
    "backend": ("private_key_jwt", ["client_credentials"]),
}


def _run(settings_for: SettingsFor, action: Action) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        try:
            result = asyncio.run(_with_server(settings_for(args), action, args))
        except FhirError as err:
            print(f"fhirpm: {err.diagnostics}", file=sys.stderr)
            return 1
        except (OSError, ValueError) as err:
            print(f"fhirpm: {err}", file=sys.stderr)
            return 1
        print(json.dumps(result, indent=2))
        return 0
    return command


async def _with_server(settings: Settings, action: Action, args: argparse.Namespace) -> Any:
    store = store_from_settings(settings)
    await store.open()
    try:
        return await action(AuthServer(settings, store), args)
    finally:
        await store.close()


async def add_client(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    method, grants = _KINDS[args.type]
    jwks = json.loads(Path(args.jwks_file).read_text()) if args.jwks_file else None
    client, secret = await server.clients.add(
        name=args.name, auth_method=method, redirect_uris=args.redirect_uri or [],
        launch_uri=args.launch_uri, scope=args.scope, grant_types=grants, jwks=jwks,
        jwks_uri=args.jwks_uri)
    out = {k: v for k, v in client.record().items() if k != "secret_digest"}
    if secret:
        out["client_secret"] = secret
    return out


async def list_clients(server: AuthServer, args: argparse.Namespace) -> list[dict[str, Any]]:
    from fhirpm.auth.records import CLIENTS

    return [{k: v for k, v in r.body.items() if k != "secret_digest"}
            for r in await server.docs.list(CLIENTS)]


async def add_user(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password for the new user: ")
    user = await server.users.add(args.username, password, fhir_user=args.fhir_user,
                                  name=args.name, admin=args.admin)
    return user.public()


async def launch(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    token, url = await server.launches.create(
        args.client, user=args.user, patient=args.patient, encounter=args.encounter,
        need_patient_banner=args.banner)
    return {"launch": token, "url": url, "expires_in": server.settings.launch_seconds}


async def rotate_keys(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    return {"kid": await server.keys.rotate()}


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store-url", dest="store_url",
                        help="store URL (default sqlite:///./var/fhirpm.db, FHIRPM_STORE_URL)")


def install(sub: argparse._SubParsersAction, settings_for: SettingsFor) -> None:
    """Add the auth subcommands to the `fhirpm` parser."""
    clients = sub.add_parser("clients", help="register SMART apps and backend services")
    csub = clients.add_subparsers(dest="clients_command", required=True)
    add = csub.add_parser("add", help="register a client; prints it (and its secret) as JSON")
    add.add_argument("--name", required=True)
    add.add_argument("--type", choices=sorted(_KINDS), default="public",
                     help="public (PKCE only), confidential (client secret), asymmetric "
                          "(private_key_jwt app), backend (client_credentials)")
    add.add_argument("--redirect-uri", action="append", help="repeatable")
    add.add_argument("--launch-uri", help="the app's EHR launch URL")
    add.add_argument("--scope", help="the most this client may be granted")
    add.add_argument("--jwks-file", help="a JWKS file with the client's public keys")
    add.add_argument("--jwks-uri", help="a URL serving the client's JWKS")
    _store_option(add)
    add.set_defaults(func=_run(settings_for, add_client))
    ls = csub.add_parser("list", help="list registered clients as JSON")
    _store_option(ls)
    ls.set_defaults(func=_run(settings_for, list_clients))

    users = sub.add_parser("users", help="manage the users who sign in")
    usub = users.add_subparsers(dest="users_command", required=True)
    uadd = usub.add_parser("add", help="add a user; prints it as JSON")
    uadd.add_argument("--username", required=True)
    uadd.add_argument("--fhir-user", help="Practitioner/123, Patient/7, RelatedPerson/9")
    uadd.add_argument("--name")
    uadd.add_argument("--admin", action="store_true")
    uadd.add_argument("--password-stdin", action="store_true",
                      help="read the password from the first line of standard input")
    _store_option(uadd)
    uadd.set_defaults(func=_run(settings_for, add_user))

    ehr = sub.add_parser("launch", help="issue an EHR launch; prints the app launch URL")
    ehr.add_argument("--client", required=True, help="client_id")
    ehr.add_argument("--user", help="the user the launch is for")
    ehr.add_argument("--patient", help="Patient id")
    ehr.add_argument("--encounter", help="Encounter id")
    ehr.add_argument("--banner", action="store_true", help="ask the app to show a banner")
    _store_option(ehr)
    ehr.set_defaults(func=_run(settings_for, launch))

    keys = sub.add_parser("keys", help="token signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = ksub.add_parser("rotate", help="new signing key; the previous one still verifies")
    _store_option(rotate)
    rotate.set_defaults(func=_run(settings_for, rotate_keys))
