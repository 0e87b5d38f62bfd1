"""A real `fhirpm serve` (uvicorn) on a free loopback port, one per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.server import ServerProcess


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'e2e.db'}"


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess.fhirpm(store_url, tmp_path / "server.log", auth=True) as running:
        yield running
