"""A real server in a subprocess on a free loopback port, for benchmarks and e2e tests.

`ServerProcess` starts a command that serves HTTP on 127.0.0.1:<port>, waits until it answers
(a bounded polling loop, never a fixed sleep), and stops it gracefully (SIGTERM) or brutally
(SIGKILL, for crash tests). The child's output goes to a log file so a full pipe can never
stall it; the log is quoted when the server fails to start.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fhirpm_command(port: int, store_url: str) -> list[str]:
    return [sys.executable, "-m", "fhirpm.cli", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--store-url", store_url]


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a local test server: plain logs, no authorization."""
    env = dict(os.environ)
    env.update({"FHIRPM_LOG_JSON": "false", "FHIRPM_LOG_LEVEL": "WARNING",
                "FHIRPM_AUTH__ENABLED": "false"})
    env.update(extra)
    return env


def staff_token(store_url: str, port: int, scope: str = "user/*.cruds") -> str:
    """An access token `fhirpm serve --port <port> --store-url <store_url>` accepts, issued
    into its store by the authorization server's own code, as a staff login would be."""
    import asyncio

    from fhirpm.auth.server import AuthServer
    from fhirpm.auth.tokens import Grant
    from fhirpm.config import Settings
    from fhirpm.storage.factory import store_from_settings

    async def mint() -> str:
        settings = Settings(store_url=store_url, host="127.0.0.1", port=port)
        store = store_from_settings(settings)
        await store.open()
        try:
            grant = Grant(client_id="bench", sub="staff", scope=scope,
                          fhir_user="Practitioner/staff")
            return (await AuthServer(settings, store).tokens.issue(grant))["access_token"]
        finally:
            await store.close()

    return asyncio.run(mint())


class ServerProcess:
    def __init__(self, command: list[str], port: int, log_path: Path, *,
                 ready_path: str = "/fhir/metadata", env: dict[str, str] | None = None) -> None:
        self.command = command
        self.port = port
        self.log_path = log_path
        self.ready_path = ready_path
        self.env = env if env is not None else server_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None  # a bearer token the server accepts (fhirpm(auth=True))

    @classmethod
    def fhirpm(cls, store_url: str, log_path: Path, port: int | None = None, *,
               auth: bool = False, env: dict[str, str] | None = None) -> ServerProcess:
        """`auth`: authorization on, as deployed; `token` then holds a staff token for it
        (minted into the store before the server starts). Off by default for the tests
        about serving, durability and ingest, where it adds nothing. `env`: more
        `FHIRPM_*` settings for the server (benchmarks running it as deployed)."""
        port = port or free_port()
        extra = env or {}
        if not auth:
            return cls(fhirpm_command(port, store_url), port, log_path,
                       env=server_env(**extra))
        server = cls(fhirpm_command(port, store_url), port, log_path,
                     env=server_env(**{**extra, "FHIRPM_AUTH__ENABLED": "true"}))
        server.token = staff_token(store_url, port)
        return server

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if self._answers():
                return
            time.sleep(0.02)  # polling interval of a bounded readiness loop
        self.kill()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def _answers(self) -> bool:
        """Any HTTP answer means the app finished its startup (uvicorn binds after it)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", self.ready_path)
            conn.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            conn.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing; what a power cut looks like to the app."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (uvicorn shuts down cleanly); SIGKILL if it does not."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
