"""Over real sockets: persistent connections, several messages per connection, framing
limits, idle timeout, TLS, and a listener killed mid-stream then restarted."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from fhirpm.config import Hl7Settings
from fhirpm.hl7v2 import ack, parser
from fhirpm.hl7v2.bridge import Bridge
from fhirpm.hl7v2.mllp import MllpClient, frame
from fhirpm.repository.interactions import Interactions
from tests.conftest import BASE, shared_path
from tests.hl7v2.samples import adt
from tests.hl7v2.test_inbound import search, with_control_id


@pytest.fixture
async def bridge(ix: Interactions, hl7_settings: Hl7Settings):
    b = Bridge(ix, hl7_settings, BASE, outbound=False)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


@pytest.mark.usefixtures("conditional")
async def test_samples_on_one_persistent_connection(bridge: Bridge) -> None:
    async with MllpClient("127.0.0.1", bridge.server.port) as client:
        for path in sorted(shared_path("hl7v2").glob("*.hl7")):
            raw = with_control_id(path.read_bytes(), "M-" + path.stem)
            h = parser.parse(raw).header
            wanted = 1 if not h.enhanced else sum(
                ack.wanted(c, ok=True) for c in (h.accept_ack, h.app_ack))
            if not wanted:
                continue  # the sender asked for no acknowledgement at all
            replies = await client.send(raw, replies=wanted)
            for reply in replies:
                info = ack.read(reply)
                assert info.ok and info.control_id == h.control_id, (path.name, info)


async def test_bad_messages_get_naks_and_the_connection_stays_up(bridge: Bridge) -> None:
    async with MllpClient("127.0.0.1", bridge.server.port) as client:
        (garbage,) = await client.send(b"\x00not hl7 at all")
        assert ack.read(garbage).code == "AR"
        (unknown,) = await client.send(adt("A99", "U9"))
        assert ack.read(unknown).code == "AR" and ack.read(unknown).control_id == "U9"
        # stray bytes between frames are skipped
        assert client._writer is not None
        client._writer.write(b"\r\n\r\n")
        (again,) = await client.send(adt("A98", "U10"))
        assert ack.read(again).control_id == "U10"


async def test_oversized_frame_is_rejected_and_closed(ix: Interactions,
                                                      hl7_settings: Hl7Settings) -> None:
    small = hl7_settings.model_copy(update={"max_frame_bytes": 2048})
    b = Bridge(ix, small, BASE, outbound=False)
    async with b.server:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.server.port)
        writer.write(frame(adt(extra="NTE|1||" + "x" * 5000)))
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 5)
        assert ack.read(reply[1:-2].decode()).code == "AR"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
        writer.close()


async def test_idle_connection_is_closed(ix: Interactions, hl7_settings: Hl7Settings) -> None:
    quick = hl7_settings.model_copy(update={"idle_timeout": 0.2})
    b = Bridge(ix, quick, BASE, outbound=False)
    async with b.server:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.server.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_tls_listener(ix: Interactions, hl7_settings: Hl7Settings,
                            tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    tls = hl7_settings.model_copy(update={"tls_cert": str(cert), "tls_key": str(key)})
    b = Bridge(ix, tls, BASE, outbound=False)
    async with b.server:
        context = ssl.create_default_context(cafile=str(cert))
        async with MllpClient("127.0.0.1", b.server.port, ssl_context=context) as client:
            (reply,) = await client.send(adt("A99", "T1"))
            assert ack.read(reply).control_id == "T1"
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            async with MllpClient("127.0.0.1", b.server.port) as plain:
                await plain.send(adt("A99", "T2"))


@pytest.mark.usefixtures("conditional")
async def test_listener_killed_mid_stream_then_resend_unacknowledged(
        ix: Interactions, hl7_settings: Hl7Settings) -> None:
    messages = [adt("A04", f"K{n}", pid=f"PID|1||MRN-K{n}^^^PRACTICE^MR||Doe^K{n}")
                for n in range(8)]
    first = Bridge(ix, hl7_settings, BASE, outbound=False)
    await first.start()
    acked: set[int] = set()
    client = MllpClient("127.0.0.1", first.server.port, timeout=5)
    for n, text in enumerate(messages[:4]):
        (reply,) = await client.send(text)
        assert ack.read(reply).ok
        acked.add(n)
    assert client._writer is not None
    client._writer.write(frame(messages[4]))  # in flight when the listener dies
    await client._writer.drain()
    await first.stop()
    await client.close()
    second = Bridge(ix, hl7_settings, BASE, outbound=False)
    async with second.server, MllpClient("127.0.0.1", second.server.port) as again:
        for n, text in enumerate(messages):
            if n not in acked:
                (reply,) = await again.send(text)
                assert ack.read(reply).ok, reply
    for n in range(8):
        assert len(await search(ix, "Patient", identifier=f"MRN-K{n}")) == 1
