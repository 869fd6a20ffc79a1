"""Starting and stopping a real uvicorn serving magorder, for benchmarks and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE_APP = "app.main:app"


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A uvicorn process and where it listens."""

    process: subprocess.Popen[str]
    base_url: str


def serve_flags() -> list[str]:
    """Return the uvicorn flags ``make serve`` and the image use (the Makefile's UVICORN_FLAGS)."""
    for line in (REPO_ROOT / "Makefile").read_text().splitlines():
        if line.startswith("UVICORN_FLAGS ?="):
            return line.partition("?=")[2].split()
    raise RuntimeError("no UVICORN_FLAGS in the Makefile")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    port: int,
    *,
    app: str = SERVICE_APP,
    env: Mapping[str, str] | None = None,
    capture_output: bool = False,
    uvicorn_args: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """Start uvicorn serving ``app`` on a loopback port, as a user would.

    Args:
        port: Port to listen on, on 127.0.0.1.
        app: The ASGI application, as uvicorn names it.
        env: Variables added to this process's environment (e.g. ``MAGORDER_MODEL_DIR``).
        capture_output: Keep the server's log in ``process.stdout``; it is discarded otherwise.
            Read it, or the server blocks once the pipe is full.
        uvicorn_args: More uvicorn options, e.g. ``("--limit-concurrency", "3")``.

    Returns:
        The server process.
    """
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port)]
    return subprocess.Popen(  # noqa: S603 - fixed command line
        [*command, "--host", "127.0.0.1", *uvicorn_args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE if capture_output else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_healthy(process: subprocess.Popen[str], base_url: str, timeout_s: float) -> None:
    """Wait until ``/health`` answers 200.

    Args:
        process: The server process.
        base_url: Where it listens, e.g. ``http://127.0.0.1:8000``.
        timeout_s: How long to wait.

    Raises:
        RuntimeError: The server exited (its captured log is in the message) or timed out.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"server exited with status {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not healthy after {timeout_s} s")


@contextmanager
def running_server(
    model_dir: Path | None = None,
    *,
    app: str = SERVICE_APP,
    startup_timeout_s: float = 120.0,
    settings: dict[str, str] | None = None,
) -> Iterator[RunningServer]:
    """Run the service, with the flags ``make serve`` uses, until the block ends; then SIGTERM.

    Args:
        model_dir: Model to serve; the service's default when omitted.
        app: The ASGI application, as uvicorn names it.
        startup_timeout_s: How long to wait for ``/health`` to answer 200.
        settings: More ``MAGORDER_*`` environment variables for the server.

    Yields:
        The running server.
    """
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "MAGORDER_LOG_LEVEL": "WARNING", **(settings or {})}
    if model_dir is not None:
        env["MAGORDER_MODEL_DIR"] = str(model_dir)
    port = free_port()
    process = start_server(port, app=app, env=env, uvicorn_args=serve_flags())
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base_url, startup_timeout_s)
        yield RunningServer(process, base_url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
