"""The bridge inside the app (`fhirpm serve --mllp`) and the `fhirpm hl7` commands, over
real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fhirpm.app import create_app
from fhirpm.cli import main
from fhirpm.config import Hl7Settings, Settings
from fhirpm.hl7v2 import ack
from fhirpm.hl7v2.mllp import MllpClient
from tests.hl7v2.samples import adt


def with_mllp(settings: Settings) -> Settings:
    return settings.model_copy(update={"hl7": Hl7Settings(enabled=True, port=0)})


async def test_app_lifespan_runs_the_listener(settings: Settings) -> None:
    app = create_app(with_mllp(settings))
    async with app.router.lifespan_context(app):
        port = app.state.hl7.server.port
        async with MllpClient("127.0.0.1", port) as client:
            (reply,) = await client.send(adt("A99", "APP1"))
        assert ack.read(reply).code == "AR"
    assert app.state.hl7.server._server is None  # stopped with the app


async def test_cli_send_prints_acks_and_fails_on_naks(settings: Settings, tmp_path: Path,
                                                      capsys) -> None:
    app = create_app(with_mllp(settings))
    batch = tmp_path / "two.hl7"
    batch.write_text(adt("A99", "C1").replace("\r", "\n") + adt("A98", "C2"))
    async with app.router.lifespan_context(app):
        port = str(app.state.hl7.server.port)
        code = await asyncio.to_thread(main, ["hl7", "send", "--port", port, str(batch)])
    out = capsys.readouterr().out
    assert code == 1
    assert "ADT^A99 C1: AR" in out and "ADT^A98 C2: AR" in out


async def test_cli_messages_and_replay(settings: Settings, capsys) -> None:
    app = create_app(with_mllp(settings))
    async with app.router.lifespan_context(app):
        client = MllpClient("127.0.0.1", app.state.hl7.server.port)
        await client.send(adt("A99", "R1"))
        await client.close()
    url = ["--store-url", settings.store_url]
    assert await asyncio.to_thread(main, ["hl7", "messages", "--status", "rejected", *url]) == 0
    assert '"control_id": "R1"' in capsys.readouterr().out
    code = await asyncio.to_thread(main, ["hl7", "replay", "--status", "rejected", *url])
    assert code == 1  # still an unknown event
    assert "ADT^A99 R1: rejected" in capsys.readouterr().out


async def test_readiness_and_metrics_report_the_bridge(settings: Settings) -> None:
    import httpx

    from tests.conftest import BASE

    app = create_app(with_mllp(settings))
    bridge = app.state.hl7
    assert bridge.listening() == "not listening"  # registered, not started yet
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE.rsplit("/fhir", 1)[0]) as client:
            ready = (await client.get("/readyz")).json()
            async with MllpClient("127.0.0.1", bridge.server.port) as mllp:
                (good,) = await mllp.send(adt("A04", "M1"))
                await mllp.send(adt("A04", "M1"))  # a resend: answered from the log
                await mllp.send(adt("A99", "M2"))
            metrics = (await client.get("/metrics")).text
        await bridge.server.stop()  # the listener went away: no longer ready
        assert bridge.listening() == "not listening"
    assert ack.read(good).code == "AA"
    assert ready["checks"]["mllp"] == "ok" and ready["status"] == "ready"
    assert 'fhirpm_hl7_messages_total{type="ADT^A04",status="processed"} 1' in metrics
    assert 'fhirpm_hl7_messages_total{type="ADT^A04",status="duplicate"} 1' in metrics
    assert 'fhirpm_hl7_messages_total{type="other",status="rejected"} 1' in metrics
