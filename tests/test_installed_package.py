"""The package works installed, not only from a source checkout: a wheel built from the checkout goes
into a clean virtualenv outside it, and from another folder `stream-app segments validate`, a replay
and a short demo run (the schemas, the default definitions and the broker's pom are package data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from stream_app.broker.local_kafka import free_port

from .helpers import free_port_pair

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a clean virtualenv (outside the checkout) with the wheel built from the checkout."""
    root = tmp_path_factory.mktemp("installed")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(root / "dist"), str(REPO)], root)
    assert "SetuptoolsDeprecationWarning" not in built.stdout + built.stderr, "the build prints deprecation warnings"
    wheel = next((root / "dist").glob("stream_app-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("stream_app/segments/defaults.yaml", "stream_app/schemas/clickstream-event.schema.json",
                    "stream_app/broker/pom.xml"):
        assert shipped in names, f"{shipped} is not in the wheel"
    _run([sys.executable, "-m", "venv", str(root / "venv")], root)
    _run([str(root / "venv" / "bin" / "pip"), "install", "--quiet", str(wheel)], root, timeout=1200)
    return root / "venv" / "bin"


def test_validate_list_and_replay_from_another_folder(installed: Path, tmp_path: Path) -> None:
    cli = str(installed / "stream-app")
    validated = _run([cli, "segments", "validate"], tmp_path)
    assert "valid" in validated.stdout and str(REPO) not in validated.stdout  # the installed defaults
    assert "power_user" in _run([cli, "segments", "list"], tmp_path).stdout
    _run([cli, "generate", "--users", "50", "--days", "7", "--output", "events.jsonl"], tmp_path)
    _run([cli, "replay", "--input", "events.jsonl", "--output", "transitions.jsonl"], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "transitions.jsonl").read_text().splitlines()]
    assert {row["segment"] for row in rows} >= {"lifecycle", "engagement"} and len(rows) > 50


def test_a_short_demo_from_another_folder(installed: Path, tmp_path: Path) -> None:
    port = free_port_pair()
    env = dict(os.environ, STREAM_APP_DEMO_DIR=str(tmp_path / "demo"), STREAM_APP_KAFKA_PORT=str(port),
               STREAM_APP_WEB_PORT=str(free_port()))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    # STREAM_APP_CACHE (set by make / .ci/run) points at the Kafka jars Maven fetched for this checkout
    proc = subprocess.run(["timeout", "-s", "INT", "75", str(installed / "stream-app"), "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=200)
    out = proc.stdout
    assert "worker started" in out, out[-3000:] + proc.stderr[-3000:]
    assert out.count("->") > 20, out[-3000:]  # transitions printed as they happen
    assert "demo: stopped" in out, out[-3000:] + proc.stderr[-3000:]
