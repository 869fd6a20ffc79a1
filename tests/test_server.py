"""A real uvicorn process: startup, a prediction, graceful shutdown, and refusing a bad model."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import DEFAULT_MODEL_DIR
from app.core.model_card import (
    HEAD_DIRNAMES,
    METADATA_FILENAME,
    SAVED_MODEL_DIRNAME,
    hash_directory,
)
from app.core.model_manifest import write_manifest
from app.main import create_app
from bench.server import REPO_ROOT, free_port, serve_flags, start_server, wait_until_healthy
from tests.conftest import make_settings, read_until_closed

STARTUP_TIMEOUT_S = 60.0
BODY_TIMEOUT_S = 2


def _start_server(
    model_dir: Path,
    port: int,
    *,
    body_timeout_s: int = BODY_TIMEOUT_S,
    uvicorn_args: Sequence[str] = (),
) -> subprocess.Popen[str]:
    env = {"MAGORDER_MODEL_DIR": str(model_dir), "MAGORDER_BODY_TIMEOUT_S": str(body_timeout_s)}
    return start_server(port, env=env, capture_output=True, uvicorn_args=uvicorn_args)


@contextmanager
def _serving(
    model_dir: Path, *, body_timeout_s: int = BODY_TIMEOUT_S, uvicorn_args: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A healthy server on a free port, its process and URL; killed at the end unless it ended."""
    port = free_port()
    process = _start_server(
        model_dir, port, body_timeout_s=body_timeout_s, uvicorn_args=uvicorn_args
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base_url, STARTUP_TIMEOUT_S)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with _serving(model_dir) as served:
        yield served


def test_uvicorn_serves_predictions(server: tuple[subprocess.Popen[str], str]) -> None:
    _, base_url = server
    response = httpx.post(
        f"{base_url}/predict", json={"formula": "NiO", "density": 6.67}, timeout=10.0
    )
    assert response.status_code == 200
    assert response.json()["reduced_formula"] == "NiO"
    bad = httpx.post(f"{base_url}/predict", json={"formula": "NiO", "density": -1}, timeout=10.0)
    assert bad.status_code == 422


def _open_request(base_url: str, body: bytes) -> socket.socket:
    """Send the head of a POST /predict and nothing of its body yet."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    head = (
        "POST /predict HTTP/1.1\r\nHost: magorder\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    connection.sendall(head.encode())
    return connection


def _read_response(connection: socket.socket) -> tuple[int, str]:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    connection.close()
    head, _, body = b"".join(chunks).decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@contextmanager
def _trickling_request(base_url: str) -> Iterator[socket.socket]:
    """Send the head of a POST /predict, then its body a byte every half second.

    The block starts a second into the trickle, which stops when the block ends.
    """
    connection = _open_request(base_url, b" " * 10_000)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            try:
                connection.sendall(b" ")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    time.sleep(1.0)
    try:
        yield connection
    finally:
        stop.set()


def test_a_stalled_body_is_answered_408(server: tuple[subprocess.Popen[str], str]) -> None:
    _, base_url = server
    connection = _open_request(base_url, b'{"formula": "NiO", "density": 6.67}')
    connection.sendall(b'{"formula": ')  # ... and then nothing more
    status, body = _read_response(connection)
    assert status == 408
    assert f"request body not received within {BODY_TIMEOUT_S} s" in body


def test_sigterm_lets_the_request_in_flight_finish(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    process, base_url = server
    body = b'{"formula": "NiO", "density": 6.67}'
    connection = _open_request(base_url, body)
    connection.sendall(body[:10])
    time.sleep(0.5)  # the server is now inside the request
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    connection.sendall(body[10:])
    status, response = _read_response(connection)
    assert status == 200, response
    assert '"reduced_formula":"NiO"' in response
    output, _ = process.communicate(timeout=30)
    # uvicorn re-raises the signal once it has shut down, so the exit status may say SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output
    assert "Finished server process" in output


def test_uvicorn_refuses_to_start_without_a_model_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    process = _start_server(missing, free_port())
    output, _ = process.communicate(timeout=STARTUP_TIMEOUT_S)
    assert process.returncode != 0
    assert output.splitlines() == [f"refusing to start: model directory {missing} does not exist"]


def _edit_card(model_dir: Path, **changes: object) -> None:
    path = model_dir / METADATA_FILENAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _margin_below_zero(model_dir: Path) -> None:
    # The committed card's rule, edited so that no answer is ever flagged as unsure.
    card = json.loads((model_dir / METADATA_FILENAME).read_text())
    _edit_card(model_dir, confidence={**card["confidence"], "margin_below": 0.0})


def _split_pb(model_dir: Path) -> None:
    path = model_dir / SAVED_MODEL_DIRNAME / "saved_model.pb"
    content = path.read_bytes()
    path.write_bytes(content[:100])
    path.with_name("saved_model.pc").write_bytes(content[100:])


def _resealed_invalid_card(model_dir: Path) -> None:
    # Sealed again after the edit: the schema refuses it, and pydantic's several lines of
    # complaint make one line of refusal.
    _edit_card(model_dir, model_version="", n_features=-1)
    write_manifest(model_dir, HEAD_DIRNAMES)


def _resealed_garbage_savedmodel(model_dir: Path) -> None:
    # TensorFlow's error spans several lines.
    (model_dir / SAVED_MODEL_DIRNAME / "saved_model.pb").write_bytes(b"garbage")
    checksum = hash_directory(model_dir / SAVED_MODEL_DIRNAME)
    _edit_card(model_dir, saved_model_sha256=checksum)
    write_manifest(model_dir, HEAD_DIRNAMES)


@pytest.mark.parametrize(
    ("committed", "damage", "reason"),
    [
        (
            True,
            _margin_below_zero,
            r"\S+/metadata\.json does not match its manifest \S+: sha256 [0-9a-f]{64}, expected "
            r"[0-9a-f]{64} \(modified or corrupted after export\)",
        ),
        (False, _split_pb, r"\S+/saved_model/saved_model\.pc is not listed in \S+/SHA256SUMS .*"),
        (
            False,
            lambda model_dir: (model_dir / "extra.png").write_bytes(b"x"),
            r"\S+/extra\.png is not listed in \S+/SHA256SUMS \(added after export\)",
        ),
        (
            False,
            lambda model_dir: (model_dir / "leak.png").symlink_to("/etc/passwd"),
            r"\S+/leak\.png is a symbolic link; a model directory holds only regular files",
        ),
        (
            False,
            lambda model_dir: (model_dir / SAVED_MODEL_DIRNAME / "fingerprint.pb").unlink(),
            r"\S+/saved_model/fingerprint\.pb is missing \(listed in \S+/SHA256SUMS\)",
        ),
        (
            False,
            _resealed_invalid_card,
            r"\S+/metadata\.json is not a valid model card: model_version: String should have "
            r"at least 1 character; n_features: Input should be greater than 0",
        ),
        (False, _resealed_garbage_savedmodel, r"cannot load SavedModel .*"),
    ],
    ids=["margin_below", "split", "added", "symlink", "removed", "card", "savedmodel"],
)
def test_uvicorn_refuses_an_edited_model_in_one_line(
    model_dir: Path,
    tmp_path: Path,
    committed: bool,
    damage: Callable[[Path], object],
    reason: str,
) -> None:
    edited = shutil.copytree(DEFAULT_MODEL_DIR if committed else model_dir, tmp_path / "model")
    damage(edited)
    process = start_server(
        free_port(),
        env={"MAGORDER_MODEL_DIR": str(edited)},
        capture_output=True,
        uvicorn_args=("--http", "app.server.http_protocol:GuardedHttpToolsProtocol"),
    )
    output, _ = process.communicate(timeout=STARTUP_TIMEOUT_S)
    assert process.returncode != 0
    # Log lines of the load (LiteRT warnings) may come first; the refusal is the last, whole.
    refusal = [line for line in output.splitlines() if "refusing" in line or "Traceback" in line]
    assert len(refusal) == 1, output
    assert re.fullmatch(f"refusing to start: {reason}", refusal[0]), output
    assert output.splitlines()[-1] == refusal[0]
    if damage is not _resealed_garbage_savedmodel:
        assert output.splitlines() == refusal  # refused before anything else was logged


def test_a_plot_name_of_any_length_or_shape_is_a_clean_404(client: TestClient) -> None:
    for path in (
        f"/model/{'a' * 300}.png",  # used to be a 500: ENAMETOOLONG
        f"/model/experiment/{'a' * 300}.png",
        f"/model/{'a' * 5000}.png",
        "/model/%00.png",
        "/model/..%2Fmetadata.json",
        "/model/metadata.json",
        "/model/experiment/..%2F..%2Fmetadata.json",
        "/model/%E2%80%AE.png",
    ):
        response = client.get(path)
        assert response.status_code == 404, path


def test_only_regular_files_inside_the_model_are_served_as_plots(
    model_dir: Path, tmp_path: Path
) -> None:
    served = shutil.copytree(model_dir, tmp_path / "model")
    (served / "plot.png").write_bytes(b"\x89PNG plot")
    write_manifest(served, HEAD_DIRNAMES)
    with TestClient(create_app(make_settings(served))) as client:
        assert client.get("/model/plot.png").content == b"\x89PNG plot"
        # Made after start-up (the load refuses them): still never served.
        (served / "leak.png").symlink_to("/etc/passwd")
        (served / "folder.png").mkdir()
        (served / "experiment").symlink_to(served)
        for path in ("/model/leak.png", "/model/folder.png", "/model/experiment/plot.png"):
            assert client.get(path).status_code == 404, path


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MAGORDER_MAX_BATCH_SIZE": "abc"},
            "refusing to start: MAGORDER_MAX_BATCH_SIZE='abc': Input should be a valid integer, "
            "unable to parse string as an integer",
        ),
        (
            {"MAGORDER_LOG_LEVEL": "loud", "MAGORDER_BODY_TIMEOUT_S": "0"},
            "refusing to start: MAGORDER_BODY_TIMEOUT_S='0': Input should be greater than 0; "
            "MAGORDER_LOG_LEVEL='loud': Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    model_dir: Path, env: dict[str, str], message: str
) -> None:
    process = start_server(
        free_port(), env={"MAGORDER_MODEL_DIR": str(model_dir), **env}, capture_output=True
    )
    output, _ = process.communicate(timeout=STARTUP_TIMEOUT_S)
    assert process.returncode != 0
    assert output.strip() == message


def test_tensorflow_start_up_chatter_stays_out_of_the_log(model_dir: Path) -> None:
    port = free_port()
    process = _start_server(model_dir, port)
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}", STARTUP_TIMEOUT_S)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    for noise in ("cuInit", "Could not find cuda drivers", "absl::InitializeLog", "port.cc"):
        assert noise not in output
    assert "loaded model" in output


def test_refused_chunked_bodies_free_their_connection(model_dir: Path) -> None:
    # A chunked body over the limit used to get its 413 on a connection left open: a few such
    # clients filled uvicorn's connection cap and /health answered 503 to everyone else.
    port = free_port()
    env = {"MAGORDER_MODEL_DIR": str(model_dir), "MAGORDER_MAX_BODY_BYTES": "1024"}
    process = start_server(port, env=env, uvicorn_args=("--limit-concurrency", "3"))
    base_url = f"http://127.0.0.1:{port}"
    clients: list[socket.socket] = []
    try:
        wait_until_healthy(process, base_url, STARTUP_TIMEOUT_S)
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(
                b"POST /predict HTTP/1.1\r\nHost: magorder\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b"x" * 0x1000 + b"\r\n"
            )
            clients.append(client)  # ... and never closed by the client
        for client in clients:
            response = read_until_closed(client)  # socket.timeout if the server keeps it
            head = response.split(b"\r\n\r\n", 1)[0].lower()
            assert head.startswith(b"http/1.1 413")
            assert b"connection: close" in head
        assert httpx.get(f"{base_url}/health", timeout=10.0).status_code == 200
    finally:
        for client in clients:
            client.close()
        process.kill()
        process.wait(timeout=10)


def test_make_serve_runs_uvicorn_with_the_images_flags() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    command = text[text.index("\nCMD [") + len("\nCMD ") :]
    command = json.loads(command[: command.index("]") + 1].replace("\\\n", ""))
    image_flags = command[command.index("8000") + 1 :]
    assert serve_flags() == image_flags


def test_sigterm_ends_a_trickling_client_in_bounded_time_under_the_serve_flags(
    model_dir: Path,
) -> None:
    """A client sending its body a byte at a time cannot keep `make serve` running."""
    flags = serve_flags()
    grace = float(flags[flags.index("--timeout-graceful-shutdown") + 1])
    with _serving(model_dir, body_timeout_s=30, uvicorn_args=flags) as (process, base_url):
        with _trickling_request(base_url) as connection:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=grace + 15)
            waited = time.monotonic() - started
        connection.close()
    assert waited < grace + 10, output
    assert "Finished server process" in output


def test_sigterm_answers_a_body_still_trickling_with_a_json_503(model_dir: Path) -> None:
    """A body still arriving at SIGTERM is refused cleanly, not cancelled at the grace limit.

    uvicorn waits for it until the end of its grace period, then cancels the request: a broken
    pipe for the client and a 500 with a traceback in the log. The body now gets one body
    timeout (at most half the grace) to finish, then a JSON 503.
    """
    with _serving(model_dir, uvicorn_args=serve_flags()) as (process, base_url):
        with _trickling_request(base_url) as connection:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            status, body = _read_response(connection)
        answered_s = time.monotonic() - started
        output, _ = process.communicate(timeout=30)
    assert status == 503, body
    assert json.loads(body)["error"]["type"] == "service_unavailable"
    assert answered_s < BODY_TIMEOUT_S + 2
    assert "Traceback" not in output, output
    assert " 500 " not in output, output
    assert "Finished server process" in output
