"""A real server in a subprocess on a free loopback port, for benchmarks and e2e tests.

`ServerProcess` starts a command that serves HTTP on 127.0.0.1:<port>, waits until it answers
(a bounded polling loop, never a fixed sleep), and stops it gracefully (SIGTERM) or brutally
(SIGKILL, for crash tests). The child's output goes to a log file so a full pipe can never
stall it; the log is quoted when the server fails to start.

A free port is picked and released before the child binds it, so another process may take
it in between. Two guards: the server counts as ready only once its own process holds the
listening socket (from /proc; an answer from whoever else listens there does not count),
and a server built with `ServerProcess.on_free_port` (a command for a given port) that
exits because its port was taken is started again on another one.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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


PORT_ATTEMPTS = 5  # a server whose port was taken before it bound is tried elsewhere


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")  # 0A: LISTEN
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False


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
        # set by `on_free_port`: the command for a port (and what else depends on the port),
        # so a start that lost its port to another process can be tried on another one
        self._for_port: Callable[[int], None] | None = None
        self._log_from = 0

    @classmethod
    def on_free_port(cls, command_for: Callable[[int], list[str]], log_path: Path, *,
                     ready_path: str = "/fhir/metadata", env: dict[str, str] | None = None,
                     prepare: Callable[[ServerProcess], None] | None = None
                     ) -> ServerProcess:
        """A server running `command_for(port)` on a free port, started on another one if
        that port is taken before the server binds it. `prepare(server)` runs whenever the
        port is chosen (for what depends on it, such as a token's audience)."""
        server = cls([], 0, log_path, ready_path=ready_path, env=env)

        def use(port: int) -> None:
            server.port = port
            server.command = command_for(port)
            if prepare is not None:
                prepare(server)
        server._for_port = use
        use(free_port())
        return server

    @classmethod
    def fhirpm(cls, store_url: str, log_path: Path, port: int | None = None, *,
               auth: bool = False, env: dict[str, str] | None = None) -> ServerProcess:
        """`auth`: authorization on, as deployed; `token` then holds a staff token for it
        (minted into the store before the server starts). Off by default for the tests
        about serving, durability and ingest, where it adds nothing. `env`: more
        `FHIRPM_*` settings for the server (benchmarks running it as deployed)."""
        extra = env or {}
        if auth:
            extra = {**extra, "FHIRPM_AUTH__ENABLED": "true"}

        def mint(server: ServerProcess) -> None:
            server.token = staff_token(store_url, server.port)

        if port is None:
            return cls.on_free_port(lambda p: fhirpm_command(p, store_url), log_path,
                                    env=server_env(**extra), prepare=mint if auth else None)
        server = cls(fhirpm_command(port, store_url), port, log_path, env=server_env(**extra))
        if auth:
            mint(server)
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
        for attempt in range(1, PORT_ATTEMPTS + 1):
            with self.log_path.open("ab") as log:
                self._log_from = log.tell()  # this attempt's output starts here
                self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT)
            if self._wait_ready(timeout):
                return self
            if self._for_port is None or attempt == PORT_ATTEMPTS:
                break
            self._for_port(free_port())  # the port was taken before the server bound it
        raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")

    def _wait_ready(self, timeout: float) -> bool:
        """True once the server answers on its own socket; False if it exited because its
        port was taken; raises if it failed otherwise or never became ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                if self._port_was_taken():
                    return False
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if listens(self.proc.pid, self.port) and self._answers():
                return True
            time.sleep(0.02)  # polling interval of a bounded readiness loop
        self.kill()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def _port_was_taken(self) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_from)
                output = log.read().decode(errors="replace")
        except OSError:
            return False
        return "address already in use" in output.lower()

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
