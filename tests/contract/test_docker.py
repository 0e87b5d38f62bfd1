"""docker/: the compose file is valid for the Compose client (no engine needed) and the
Dockerfile keeps its promises (multi-stage, non-root, healthcheck). Nothing here runs a
container; docs/deploy.md says how to."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) or `docker-compose` (v1), else skip."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True,
                               check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("no Docker Compose client (docker compose / docker-compose) on this machine")


def compose(*args: str) -> str:
    done = subprocess.run([*compose_command(), "-f", str(DOCKER / "compose.yaml"), *args],
                          capture_output=True, text=True, check=False, timeout=60,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def top_level(yaml_text: str) -> dict[str, str]:
    """The normalised config's top-level keys and their (indented) bodies."""
    sections: dict[str, str] = {}
    name = ""
    for line in yaml_text.splitlines():
        if line and not line[0].isspace():
            name = line.split(":", 1)[0]
            sections[name] = ""
        elif name:
            sections[name] += line + "\n"
    return sections


def test_compose_config_is_valid_with_the_replicaset_profile() -> None:
    full = compose("--profile", "replicaset", "config")  # one client run: it is slow
    sections = top_level(full)
    names = set(re.findall(r"^  ([a-z0-9-]+):$", sections["services"], re.MULTILINE))
    assert names == {"mongo", "mongo-init", "app", "mongo-rs1", "mongo-rs2", "mongo-rs3",
                     "rs-init", "app-rs"}
    assert "replicaSet=rs0" in full and "replicaSet=rs1" in full
    assert "image: mongo:8.0" in full
    assert "service_completed_successfully" in full  # the apps wait for rs.initiate()
    assert {"mongo-data", "app-data", "mongo-rs1-data"} <= set(
        re.findall(r"^  ([a-z0-9-]+):", sections["volumes"], re.MULTILINE))


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "build"
    assert "COPY --from=build" in text
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK .*CMD", text, re.MULTILINE | re.DOTALL)
    assert "/readyz" in text
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore and {"!pyproject.toml", "!fhirpm/"} <= set(ignore)  # small context


def test_the_wheel_the_image_installs_carries_the_hl7_mappings(tmp_path: Path) -> None:
    """The image runs `pip install .` (a wheel, not the checkout): the top-level mappings/
    must be inside it, and the installed engine must load them from there."""
    pytest.importorskip("hatchling", reason="the build backend (a test extra) is needed")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "-w",
                            str(tmp_path), "--no-deps", "--no-build-isolation", "-q"],
                           capture_output=True, text=True, check=False, timeout=120)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("fhirpm-*.whl")
    sources = {f"fhirpm/mappings/{p.relative_to(ROOT / 'mappings').as_posix()}"
               for p in (ROOT / "mappings").rglob("*.yaml")}
    assert len(sources) > 10
    with zipfile.ZipFile(wheel) as archive:
        assert sources <= set(archive.namelist())
        archive.extractall(tmp_path / "site")
    probe = ("from fhirpm.hl7v2.engine import MappingSet, default_mappings_dir as d; "
             "print(d()); print(len(MappingSet.load().messages))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=False, timeout=60, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert run.returncode == 0, run.stderr
    where, messages = run.stdout.split()
    assert Path(where) == (tmp_path / "site" / "fhirpm" / "mappings").resolve()
    assert int(messages) > 0
