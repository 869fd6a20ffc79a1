"""Starting and stopping a real uvicorn serving magorder, for benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A uvicorn process and where it listens."""

    process: subprocess.Popen[bytes]
    base_url: str
    startup_s: float


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(
    model_dir: Path | None = None, *, startup_timeout_s: float = 120.0
) -> Iterator[RunningServer]:
    """Run ``uvicorn app.main:app`` on a free loopback port until the block ends.

    Args:
        model_dir: Model to serve; the service's default when omitted.
        startup_timeout_s: How long to wait for ``/health`` to answer 200.

    Yields:
        The running server; it is stopped with SIGTERM afterwards.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if model_dir is not None:
        env["MAGORDER_MODEL_DIR"] = str(model_dir)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - fixed command line
        [*command, "--host", "127.0.0.1", "--log-level", "warning"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with status {process.returncode}")
            if time.perf_counter() - started > startup_timeout_s:
                raise RuntimeError(f"server not healthy after {startup_timeout_s} s")
            try:
                if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield RunningServer(process, base_url, time.perf_counter() - started)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
