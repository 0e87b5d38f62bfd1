"""bench.server: a server whose free port was taken before it bound it starts again on
another port, and an answer from another process on the port never counts as ready."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from bench import server as bench_server
from bench.server import ServerProcess, listens

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def test_a_taken_port_is_left_for_another(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # listening, never answering: another process's server
        taken_port = taken.getsockname()[1]
        real = bench_server.free_port
        picks = iter([taken_port])
        monkeypatch.setattr(bench_server, "free_port", lambda: next(picks, None) or real())
        tried: list[int] = []

        def command(port: int) -> list[str]:
            tried.append(port)
            return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]

        with ServerProcess.on_free_port(command, tmp_path / "s.log", ready_path="/") as s:
            assert tried[0] == taken_port and s.port == tried[-1] != taken_port
            assert listens(s.pid, s.port) and not listens(s.pid, taken_port)
        assert "address already in use" in (tmp_path / "s.log").read_text().lower()
