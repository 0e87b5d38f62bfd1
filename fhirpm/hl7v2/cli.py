"""`fhirpm hl7 send | listen | replay | messages`: the bridge from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SettingsFor = Callable[[argparse.Namespace], Any]
# (settings, store) -> Interactions: handed in by fhirpm.cli, since the app wiring sits
# above this package (tests/unit/test_layers.py)
InteractionsFor = Callable[[Any, Any], Any]


def install(sub: argparse._SubParsersAction, settings_for: SettingsFor,
            interactions_for: InteractionsFor) -> None:
    hl7 = sub.add_parser("hl7", help="HL7 v2 over MLLP: send, listen, replay, messages")
    hsub = hl7.add_subparsers(dest="hl7_command", required=True)

    send = hsub.add_parser("send", help="send v2 message files over MLLP, print each ACK")
    send.add_argument("files", nargs="+", metavar="FILE",
                      help="files of one or more messages (CR, LF or CRLF; a BOM is fine)")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=2575)
    send.add_argument("--tls-ca", help="PEM of the CA to trust: connect with TLS")
    send.set_defaults(func=lambda a: asyncio.run(_send(a)))

    listen = hsub.add_parser("listen", help="run the MLLP listener into the store (no HTTP)")
    listen.add_argument("--host", help="listen address (default 127.0.0.1, FHIRPM_HL7__HOST)")
    listen.add_argument("--port", type=int, help="listen port (default 2575)")
    listen.add_argument("--store-url", dest="store_url")
    listen.add_argument("--echo", action="store_true",
                        help="store nothing: print each message and answer AA (a test "
                             "receiver for fhirpm's outbound messages)")
    listen.set_defaults(func=lambda a: _run_forever(_listen(a, settings_for(a),
                                                            interactions_for)))

    replay = hsub.add_parser("replay", help="process logged messages again")
    replay.add_argument("--id", action="append", help="a message id (repeatable)")
    replay.add_argument("--status", choices=["error", "rejected", "received", "processed"],
                        help="every logged message with this status")
    replay.add_argument("--sender", help="MSH-3")
    replay.add_argument("--date", help="YYYY-MM-DD (or a prefix)")
    replay.add_argument("--store-url", dest="store_url")
    replay.set_defaults(func=lambda a: asyncio.run(_replay(a, settings_for(a),
                                                           interactions_for)))

    messages = hsub.add_parser("messages", help="list the message log (JSON lines)")
    messages.add_argument("--sender")
    messages.add_argument("--type", help="e.g. ADT^A08")
    messages.add_argument("--patient", help="Patient/<id>")
    messages.add_argument("--date")
    messages.add_argument("--status")
    messages.add_argument("--limit", type=int, default=100)
    messages.add_argument("--store-url", dest="store_url")
    messages.set_defaults(func=lambda a: asyncio.run(_messages(a, settings_for(a),
                                                               interactions_for)))


async def _send(args: argparse.Namespace) -> int:
    import ssl

    from fhirpm.hl7v2 import ack, parser
    from fhirpm.hl7v2.mllp import MllpClient

    context = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    failures = 0
    async with MllpClient(args.host, args.port, ssl_context=context) as client:
        for name in args.files:
            raw = Path(name).read_bytes()
            text = parser.decode(raw)
            for message in parser.split_messages(text):
                try:
                    h = parser.parse(message).header
                except parser.V2Error as exc:
                    print(f"{name}: not sent: {exc}")
                    failures += 1
                    continue
                wanted = 1 if not h.enhanced else max(1, sum(
                    ack.wanted(c, ok=True) for c in (h.accept_ack, h.app_ack)))
                replies = await client.send(message.encode("utf-8"), replies=wanted)
                for reply in replies:
                    info = ack.read(reply)
                    print(f"{name} {h.message_code}^{h.event} {h.control_id}: {info.code}"
                          + (f" {info.error or info.text}" if not info.ok else ""))
                    failures += not info.ok
    return 1 if failures else 0


def _run_forever(coro: Any) -> int:
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop
        asyncio.run(coro)
    return 0


async def _listen(args: argparse.Namespace, settings: Any,
                  interactions_for: InteractionsFor) -> None:
    from fhirpm.hl7v2 import ack, parser
    from fhirpm.hl7v2.mllp import MllpServer

    hl7 = settings.hl7.model_copy(update={k: v for k, v in (
        ("host", args.host), ("port", args.port)) if v is not None})
    if args.echo:
        async def echo(data: bytes, peer: str, early: Any) -> list[str]:
            text = parser.decode(data)
            print(text.replace("\r", "\n"), flush=True)
            try:
                return [ack.build(parser.parse(text).header, "AA")]
            except parser.V2Error as exc:
                return [ack.build(None, "AR", error=exc)]

        server = MllpServer(echo, hl7.host, hl7.port)
        await server.start()
        print(f"echo receiver on {hl7.host}:{server.port}", flush=True)
        await asyncio.Event().wait()
        return
    from fhirpm.hl7v2.bridge import Bridge
    from fhirpm.storage.factory import store_from_settings

    store = store_from_settings(settings)
    await store.open()
    bridge = Bridge(interactions_for(settings, store), hl7, settings.fhir_base)
    await bridge.start()
    print(f"MLLP listener on {hl7.host}:{bridge.server.port}, store {settings.store_url}",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await bridge.stop()
        await store.close()


async def _open(settings: Any, interactions_for: InteractionsFor) -> tuple[Any, Any]:
    from fhirpm.hl7v2.inbound import Inbound
    from fhirpm.storage.factory import store_from_settings

    store = store_from_settings(settings)
    await store.open()
    return store, Inbound(interactions_for(settings, store), settings.hl7, settings.fhir_base)


async def _replay(args: argparse.Namespace, settings: Any,
                  interactions_for: InteractionsFor) -> int:
    store, inbound = await _open(settings, interactions_for)
    try:
        if args.id:
            records = [r for r in [await inbound.log.get(i) for i in args.id] if r]
        else:
            records = await inbound.log.list(sender=args.sender, date=args.date,
                                             status=args.status, limit=0)
        failed = 0
        for record in records:
            outcome = await inbound.replay(record)
            status = outcome.message.status if outcome.message else "?"
            print(f"{record.id} {record.type} {record.control_id}: {status}"
                  + (f" {outcome.message.error}" if outcome.message and
                     outcome.message.error else ""))
            failed += status != "processed"
        print(f"{len(records)} replayed, {failed} not processed", file=sys.stderr)
        return 1 if failed else 0
    finally:
        await store.close()


async def _messages(args: argparse.Namespace, settings: Any,
                    interactions_for: InteractionsFor) -> int:
    from fhirpm.hl7v2.messages import summary

    store, inbound = await _open(settings, interactions_for)
    try:
        for record in await inbound.log.list(sender=args.sender, type=args.type,
                                             patient=args.patient, date=args.date,
                                             status=args.status, limit=args.limit):
            print(json.dumps(summary(record)))
        return 0
    finally:
        await store.close()
