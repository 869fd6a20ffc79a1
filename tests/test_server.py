"""A real uvicorn process: startup, a prediction, graceful shutdown, and refusing a bad model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT_S = 60.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(model_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "MAGORDER_MODEL_DIR": str(model_dir), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_until_healthy(server: subprocess.Popen[str], base_url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read() if server.stdout else ""
            pytest.fail(f"server exited with {server.returncode}:\n{output}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server not healthy after {STARTUP_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = _free_port()
    process = _start_server(model_dir, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(process, base_url)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_uvicorn_serves_predictions(server: tuple[subprocess.Popen[str], str]) -> None:
    _, base_url = server
    response = httpx.post(
        f"{base_url}/predict", json={"formula": "NiO", "density": 6.67}, timeout=10.0
    )
    assert response.status_code == 200
    assert response.json()["reduced_formula"] == "NiO"
    bad = httpx.post(f"{base_url}/predict", json={"formula": "NiO", "density": -1}, timeout=10.0)
    assert bad.status_code == 422


def test_uvicorn_stops_cleanly_on_sigterm(server: tuple[subprocess.Popen[str], str]) -> None:
    process, _ = server
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    # uvicorn re-raises the signal once it has shut down, so the exit status may say SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output
    assert "Finished server process" in output


def test_uvicorn_refuses_to_start_without_a_model(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    process = _start_server(missing, _free_port())
    output, _ = process.communicate(timeout=STARTUP_TIMEOUT_S)
    assert process.returncode != 0
    assert f"refusing to start: model directory {missing} does not exist" in output
