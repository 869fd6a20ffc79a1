"""The compose stack's front door: the project's nginx.conf in front of a real uvicorn.

It needs Debian's ``nginx`` (``apt-get install nginx``; ``.ci/run`` installs it). Where none
is installed these tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from bench import hostile
from bench.server import REPO_ROOT, RunningServer, free_port, running_server
from tests.conftest import need_debian_package

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin") or ""
NO_NGINX = "no nginx on this machine (apt-get install nginx)"
CONFIG = REPO_ROOT / "deploy" / "nginx.conf"
COMPOSE = REPO_ROOT / "docker-compose.yml"
_COMPOSE_SETTINGS = {"MAGORDER_MAX_CONNECTIONS_PER_CLIENT": "0"}


def _need_nginx() -> None:
    need_debian_package(NGINX, NO_NGINX)


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in {CONFIG} exactly once"
    return text.replace(old, new)


def _local_config(directory: Path, listen: int, upstream: str) -> Path:
    """The project's nginx.conf, listening on ``listen`` and forwarding to ``upstream``."""
    text = CONFIG.read_text()
    text = _replace_once(text, "server magorder:8000;", f"server {upstream};")
    text = _replace_once(text, "listen 8080 default_server;", f"listen 127.0.0.1:{listen};")
    text = text.replace("/tmp/", f"{directory}/")  # noqa: S108 - the paths it writes to
    if os.geteuid() == 0:  # compose runs it unprivileged; as root, name the workers' user
        text = "user root;\n" + text
    config = directory / "nginx.conf"
    config.write_text(text)
    return config


def _wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {process.communicate()[0]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not listen within 15 s")


def _start_nginx(directory: Path, upstream: str) -> tuple[subprocess.Popen[str], str]:
    _need_nginx()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = _local_config(directory, port, upstream)
    process = subprocess.Popen(
        [NGINX, "-e", "stderr", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for_port(port, process)
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        return process.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


@pytest.fixture(scope="module")
def service(model_dir: Path) -> Iterator[RunningServer]:
    # As docker-compose.yml runs it: every connection comes from nginx, which caps per client.
    with running_server(model_dir, settings=_COMPOSE_SETTINGS) as running:
        yield running


@pytest.fixture(scope="module")
def front_door(service: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    upstream = service.base_url.removeprefix("http://")
    process, base_url = _start_nginx(tmp_path_factory.mktemp("nginx"), upstream)
    yield base_url
    _stop(process)


def test_the_front_door_config_is_valid(tmp_path: Path) -> None:
    _need_nginx()
    config = _local_config(tmp_path, free_port(), "127.0.0.1:9")
    checked = subprocess.run(
        [NGINX, "-e", "stderr", "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_service_answers_through_the_front_door_unchanged(front_door: str) -> None:
    answer = httpx.post(f"{front_door}/predict", json={"formula": "NiO", "density": 6.67})
    assert answer.status_code == 200
    assert answer.json()["reduced_formula"] == "NiO"
    refused = httpx.post(f"{front_door}/predict", json={"formula": "Qq2", "density": 3.0})
    assert refused.status_code == 422
    assert refused.json()["error"]["type"] == "invalid_formula"


def test_the_front_door_holds_against_hostile_clients(front_door: str) -> None:
    host, port = front_door.removeprefix("http://").split(":")
    report = hostile.run_checks(host, int(port))
    assert not report.failures, report.rows


def test_the_front_doors_own_refusals_are_json(front_door: str) -> None:
    too_large = httpx.post(
        f"{front_door}/predict",
        content=b"[" + b" " * (1 << 20) + b"]",
        headers={"Content-Type": "application/json"},
    )
    assert too_large.status_code == 413
    assert too_large.headers["content-type"] == "application/json"
    big_header = httpx.get(f"{front_door}/health", headers={"X-Big": "x" * 20_000})
    assert big_header.status_code == 431
    assert big_header.json()["error"]["type"] == "headers_too_large"


def test_a_service_that_is_down_is_a_json_503_with_retry_after(tmp_path: Path) -> None:
    process, base_url = _start_nginx(tmp_path, f"127.0.0.1:{free_port()}")  # nothing listens
    try:
        answer = httpx.get(f"{base_url}/health")
    finally:
        _stop(process)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["error"]["type"] == "service_unavailable"


def test_the_front_doors_limits_are_the_services() -> None:
    """The front door enforces the per-client cap and write deadline that compose turns off."""
    text = CONFIG.read_text()
    defaults = Settings.model_fields
    assert f"limit_conn per_client {defaults['max_connections_per_client'].default};" in text
    assert f"send_timeout {defaults['write_timeout_s'].default:g}s;" in text
    assert 'MAGORDER_MAX_CONNECTIONS_PER_CLIENT: "0"' in COMPOSE.read_text()


def test_a_client_at_its_cap_still_reaches_health(front_door: str) -> None:
    host, port = front_door.removeprefix("http://").split(":")
    head = (
        b"POST /predict HTTP/1.1\r\nHost: magorder\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    with ExitStack() as stack:
        for _ in range(Settings.model_fields["max_connections_per_client"].default or 0):
            # each in progress at nginx, which waits for the rest of its body
            stack.enter_context(socket.create_connection((host, int(port)), timeout=10)).sendall(
                head
            )
        time.sleep(0.3)
        over = httpx.post(f"{front_door}/predict", json={"formula": "NiO", "density": 6.67})
        health = httpx.get(f"{front_door}/health")
    assert over.status_code == 503
    assert over.headers["retry-after"] == "1"
    assert over.json()["error"]["type"] == "server_busy"
    assert health.status_code == 200
