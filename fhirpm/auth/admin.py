"""Administration from the command line: `fhirpm clients add|list|show|enable|disable|
secret|delete`, `fhirpm users add|list|show|enable|disable|password|delete`, `fhirpm launch`
(EHR launch) and `fhirpm keys rotate`.

Each command opens the configured store, does one thing through the AuthServer and prints
the result as JSON (so scripts can read client_id and client_secret); a secret is shown
only at creation. Clients and users change through fhirpm.auth.manage, exactly as through
the admin HTTP API. `fhirpm clients add --admin` is how a fresh install gets its first
administrator (a client that may get `fhirpm/admin` tokens). `fhirpm.cli` mounts these.
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

from fhirpm.auth.manage import Administration
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


def _kind(args: argparse.Namespace) -> tuple[str, list[str] | None]:
    """(auth method, grant types) for --type and --admin: an admin client with a secret or
    keys gets client_credentials (its admin tokens), plus the code grant if it has a
    redirect URI; a public one administers only through an admin user's sign-in."""
    kind = args.type or ("confidential" if args.admin else "public")
    method, grants = _KINDS[kind]
    if args.admin and method != "none":
        grants = ["client_credentials"]
        if args.redirect_uri:
            grants += ["authorization_code", "refresh_token"]
    return method, grants


async def add_client(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    method, grants = _kind(args)
    spec: dict[str, Any] = {
        "client_name": args.name, "token_endpoint_auth_method": method,
        "redirect_uris": args.redirect_uri or [], "launch_uri": args.launch_uri,
        "scope": args.scope, "grant_types": grants, "admin": args.admin,
        "jwks": json.loads(Path(args.jwks_file).read_text()) if args.jwks_file else None,
        "jwks_uri": args.jwks_uri}
    return await Administration(server).create_client(spec)


async def list_clients(server: AuthServer, args: argparse.Namespace) -> list[dict[str, Any]]:
    return await Administration(server).list_clients()


async def show_client(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    return await Administration(server).client(args.client_id)


async def enable_client(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    return await Administration(server).update_client(args.client_id, {"disabled": False})


async def disable_client(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    return await Administration(server).update_client(args.client_id, {"disabled": True})


async def client_secret(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    return await Administration(server).new_secret(args.client_id)


async def delete_client(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    await Administration(server).delete_client(args.client_id)
    return {"deleted": args.client_id}


def _password(args: argparse.Namespace, prompt: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


async def add_user(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    password = _password(args, "Password for the new user: ")
    spec = {"username": args.username, "password": password, "fhirUser": args.fhir_user,
            "name": args.name, "admin": args.admin}
    return await Administration(server).create_user(spec)


async def list_users(server: AuthServer, args: argparse.Namespace) -> list[dict[str, Any]]:
    return await Administration(server).list_users()


async def show_user(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    return await Administration(server).user(args.username)


async def enable_user(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    return await Administration(server).update_user(args.username, {"disabled": False})


async def disable_user(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    return await Administration(server).update_user(args.username, {"disabled": True})


async def user_password(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    password = _password(args, f"New password for {args.username}: ")
    return await Administration(server).set_password(args.username, {"password": password})


async def delete_user(server: AuthServer, args: argparse.Namespace) -> dict[str, Any]:
    await Administration(server).delete_user(args.username)
    return {"deleted": args.username}


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
    add.add_argument("--type", choices=sorted(_KINDS),
                     help="public (PKCE only; the default), confidential (client secret), "
                          "asymmetric (private_key_jwt app), backend (client_credentials)")
    add.add_argument("--admin", action="store_true",
                     help="may get fhirpm/admin tokens for the admin API (client_credentials; "
                          "--type defaults to confidential: prints a secret)")
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
    _by_key(csub, settings_for, "client_id", {
        "show": (show_client, "print one client"),
        "enable": (enable_client, "let a disabled client get tokens again"),
        "disable": (disable_client, "refuse the client and revoke its tokens"),
        "secret": (client_secret, "replace a confidential client's secret; prints it once"),
        "delete": (delete_client, "remove the client and revoke its tokens")})

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
    uls = usub.add_parser("list", help="list users as JSON")
    _store_option(uls)
    uls.set_defaults(func=_run(settings_for, list_users))
    _by_key(usub, settings_for, "username", {
        "show": (show_user, "print one user"),
        "enable": (enable_user, "let a disabled user sign in again"),
        "disable": (disable_user, "refuse the user's sign-in and revoke their tokens"),
        "delete": (delete_user, "remove the user and revoke their tokens")})
    upw = usub.add_parser("password", help="set a new password; revokes the user's tokens")
    upw.add_argument("username")
    upw.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    _store_option(upw)
    upw.set_defaults(func=_run(settings_for, user_password))

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


def _by_key(sub: argparse._SubParsersAction, settings_for: SettingsFor, key: str,
            commands: dict[str, tuple[Action, str]]) -> None:
    """Subcommands that act on one record named by a positional `key`."""
    for name, (action, help_text) in commands.items():
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument(key)
        _store_option(cmd)
        cmd.set_defaults(func=_run(settings_for, action))
