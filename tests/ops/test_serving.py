"""`fhirpm serve`'s uvicorn options on a real socket: TLS termination with a certificate
made here, HSTS over it, and a graceful shutdown that lets an in-flight request finish."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhirpm.app import create_app
from fhirpm.cli import build_parser, cmd_serve
from fhirpm.config import Settings
from fhirpm.ops.serving import uvicorn_options, with_tls
from tests.ops.conftest import ops_settings


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@asynccontextmanager
async def serving(settings: Settings, app=None) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """uvicorn on 127.0.0.1 (a free port) with `serve`'s options, until the block ends."""
    options = {**uvicorn_options(settings), "host": "127.0.0.1", "port": 0}
    server = uvicorn.Server(uvicorn.Config(app or create_app(settings), **options))
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # bounded wait for startup (uvicorn binds after the lifespan)
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        task.cancel()
        pytest.fail("uvicorn did not start")
    try:
        yield server, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_serve_terminates_tls_and_sends_hsts(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = with_tls(ops_settings(tmp_path), str(cert), str(key))
    assert uvicorn_options(settings)["ssl_certfile"] == str(cert)
    trust = ssl.create_default_context(cafile=str(cert))
    async with serving(settings) as (_, port):
        async with httpx.AsyncClient(verify=trust) as client:
            answer = await client.get(f"https://127.0.0.1:{port}/fhir/metadata")
            health = await client.get(f"https://127.0.0.1:{port}/healthz")
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken on the TLS port
            async with httpx.AsyncClient() as plain:
                await plain.get(f"http://127.0.0.1:{port}/healthz")
    assert answer.status_code == 200
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    assert "server" not in answer.headers  # no uvicorn banner
    assert health.json() == {"status": "up"}


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    base = ops_settings(tmp_path)
    assert with_tls(base, None, None) is base
    tls = with_tls(base, str(cert), str(key))
    assert tls.fhir_base == base.fhir_base  # an explicit base URL wins
    assert Settings(ops=tls.ops).fhir_base.startswith("https://")
    with pytest.raises(ValueError, match="both"):
        with_tls(base, str(cert), None)
    with pytest.raises(ValueError, match="not found"):
        with_tls(base, str(tmp_path / "missing.pem"), str(key))


def test_serve_refuses_half_a_tls_configuration(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cert, _ = self_signed(tmp_path)
    args = build_parser().parse_args(["serve", "--store-url", f"sqlite:///{tmp_path}/x.db",
                                      "--tls-cert", str(cert)])
    assert cmd_serve(args) == 2
    assert "--tls-key" in capsys.readouterr().err


async def test_graceful_shutdown_finishes_the_request_in_flight(tmp_path: Path) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Response:
        arrived.set()
        await release.wait()
        return Response(b"finished")

    settings = ops_settings(tmp_path, shutdown_grace=30)
    app = create_app(settings)
    app.router.routes.insert(0, Route("/slow", slow))
    async with serving(settings, app) as (server, port):
        client = httpx.AsyncClient(timeout=30)
        in_flight = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/slow"))
        await arrived.wait()
        server.should_exit = True  # what SIGTERM does
        for _ in range(1000):  # bounded wait until the listening socket is closed
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await asyncio.sleep(0.01)
            except OSError:
                break
        else:
            pytest.fail("the server kept accepting connections while shutting down")
        assert not in_flight.done()
        release.set()
        answer = await in_flight
        await client.aclose()
    assert answer.status_code == 200 and answer.text == "finished"
    assert app.state.ops.lifecycle.state == "stopped"
