"""A real uvicorn with the serving flags, against clients that send too little or too slowly."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from app.server.http_protocol import BODY_DEADLINE_GRACE_S, HARD_CONNECTION_FACTOR
from bench.server import RunningServer, running_server
from tests.conftest import read_until_closed

HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.0
BODY_DEADLINE_S = 2.5
MAX_HEADER_BYTES = 8192
MAX_CONNECTIONS = 400
MAX_REQUESTS_IN_FLIGHT = 4
MAX_CONNECTIONS_PER_CLIENT = 50
WRITE_TIMEOUT_S = 2.0
LIMITS = {
    "MAGORDER_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "MAGORDER_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "MAGORDER_BODY_DEADLINE_S": str(BODY_DEADLINE_S),
    "MAGORDER_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "MAGORDER_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "MAGORDER_MAX_REQUESTS_IN_FLIGHT": str(MAX_REQUESTS_IN_FLIGHT),
    "MAGORDER_MAX_CONNECTIONS_PER_CLIENT": str(MAX_CONNECTIONS_PER_CLIENT),
    "MAGORDER_WRITE_TIMEOUT_S": str(WRITE_TIMEOUT_S),
}
# Clients at other loopback addresses than 127.0.0.1 (Linux routes all of 127/8 to lo): the
# per-client cap counts connections by address.
CROWD = "127.0.0.2"

PREDICT_HEAD = (
    "POST /predict HTTP/1.1\r\nHost: magorder\r\nContent-Type: application/json\r\n"
    "Content-Length: {length}\r\n\r\n"
)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[RunningServer]:
    with running_server(model_dir, settings=LIMITS) as running:
        yield running


def _connect(
    server: RunningServer, timeout_s: float = 15.0, *, source: str | None = None
) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    bind = (source, 0) if source else None
    return socket.create_connection((host, int(port)), timeout=timeout_s, source_address=bind)


def _last_response(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The status, headers and JSON body of the last response in ``raw``."""
    head, _, body = raw[raw.rindex(b"HTTP/1.1 ") :].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    server: RunningServer,
) -> None:
    started = time.monotonic()
    raw = read_until_closed(_connect(server))
    waited = time.monotonic() - started
    assert raw == b""  # nothing of a request came: nothing to answer
    assert HEADER_TIMEOUT_S - 0.2 < waited < HEADER_TIMEOUT_S + 3


def test_headers_that_never_finish_are_answered_408(server: RunningServer) -> None:
    connection = _connect(server)
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: magorder\r\n")  # ... no blank line
    status, headers, body = _last_response(read_until_closed(connection))
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert body == {
        "error": {
            "type": "request_timeout",
            "message": f"request line and headers not received within {HEADER_TIMEOUT_S:g} s",
        }
    }


def test_a_keep_alive_connection_cannot_hold_a_half_sent_second_request(
    server: RunningServer,
) -> None:
    connection = _connect(server)
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: magorder\r\n\r\n")
    time.sleep(0.3)
    connection.sendall(b"GET /health HTTP/1.1\r\n")
    raw = read_until_closed(connection)
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert _last_response(raw)[0] == 408


def test_headers_over_the_cap_are_answered_431(server: RunningServer) -> None:
    connection = _connect(server)
    big = b"x" * MAX_HEADER_BYTES
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: magorder\r\nX-Big: " + big + b"\r\n\r\n")
    status, _, body = _last_response(read_until_closed(connection))
    assert status == 431
    assert body["error"] == {
        "type": "headers_too_large",
        "message": f"request line and headers are larger than {MAX_HEADER_BYTES} bytes",
    }
    fine = httpx.get(f"{server.base_url}/health", headers={"X-Fine": "x" * 4000}, timeout=10)
    assert fine.status_code == 200


def test_an_oversized_head_behind_a_request_in_the_same_read_is_refused(
    server: RunningServer,
) -> None:
    connection = _connect(server)
    big = b"x" * MAX_HEADER_BYTES
    first = b"GET /health HTTP/1.1\r\nHost: magorder\r\n\r\n"
    second = b"GET /health HTTP/1.1\r\nHost: magorder\r\nX-Big: " + big + b"\r\n\r\n"
    connection.sendall(first + second)  # one write: the server reads both at once
    raw = read_until_closed(connection)
    # The first request is still owed its answer, so the second is refused by closing:
    # a 431 written then would be read as the first one's response.
    assert raw.count(b"HTTP/1.1 ") <= 1
    assert b"431" not in raw.split(b"\r\n", 1)[0]
    assert not raw or raw.startswith(b"HTTP/1.1 200 OK")


def test_an_oversized_head_after_an_answered_request_is_a_431(server: RunningServer) -> None:
    connection = _connect(server)
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: magorder\r\n\r\n")
    time.sleep(0.3)  # answered by now
    big = b"x" * (MAX_HEADER_BYTES // 2)
    head = b"GET /health HTTP/1.1\r\nHost: magorder\r\nX-A: " + big + b"\r\nX-B: " + big
    connection.sendall(head + b"\r\n\r\n")
    raw = read_until_closed(connection)
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert _last_response(raw)[0] == 431


def test_endless_headers_are_cut_off_without_growing_the_server(server: RunningServer) -> None:
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    connections = [_connect(server) for _ in range(10)]
    sent = [0] * len(connections)
    chunk = b"y" * (1 << 20)
    for number, connection in enumerate(connections):
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: magorder\r\nX-Endless: ")
        try:
            while sent[number] < 64 << 20:
                connection.sendall(chunk)
                sent[number] += len(chunk)
        except OSError:  # the server closed the connection
            pass
    grown_mib = (process.memory_info().rss - before) / (1 << 20)
    for connection in connections:
        connection.close()
    # Each was refused after at most a few socket buffers of its 64 MiB.
    assert max(sent) < 16 << 20, sent
    assert grown_mib < 30


def test_300_idle_or_slow_connections_leave_a_fresh_client_served_at_once(
    server: RunningServer,
) -> None:
    with ExitStack() as stack:
        held = []
        for number in range(300):
            # From another address than the fresh client's: past its 50, the crowd's
            # connections may only ask /health, which is not what this is about.
            connection = stack.enter_context(_connect(server, source=CROWD))
            if number % 3 == 0:  # a third send part of their headers, the rest nothing
                connection.sendall(b"POST /predict HTTP/1.1\r\nHost: magorder\r\n")
            held.append(connection)
        time.sleep(0.2)
        started = time.monotonic()
        response = httpx.post(
            f"{server.base_url}/predict", json={"formula": "NiO", "density": 6.67}, timeout=5
        )
        served_s = time.monotonic() - started
        assert response.status_code == 200
        assert served_s < 1.0
        # ... and the server lets go of every one of them at the header timeout.
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 5
        for connection in held:
            connection.settimeout(max(0.1, deadline - time.monotonic()))
            raw = read_until_closed(connection)
            assert raw == b"" or _last_response(raw)[0] == 408


def _hold(stack: ExitStack, server: RunningServer, count: int, first_address: int) -> None:
    """Open ``count`` idle connections, 40 per address from 127.0.0.<first_address> on."""
    for number in range(count):
        source = f"127.0.0.{first_address + number // 40}"
        stack.enter_context(_connect(server, source=source))


def test_connections_over_the_cap_may_only_ask_health(server: RunningServer) -> None:
    # Every one of them is closed at the header timeout (1.5 s): what follows must be quick.
    with ExitStack() as stack:
        _hold(stack, server, MAX_CONNECTIONS, first_address=10)  # under each address's cap
        time.sleep(0.2)
        predict = _connect(server)
        predict.sendall(PREDICT_HEAD.format(length=2).encode() + b"{}")
        status, headers, body = _last_response(read_until_closed(predict))
        health = _connect(server)
        health.sendall(b"GET /health HTTP/1.1\r\nHost: magorder\r\n\r\n")
        answered = read_until_closed(health)  # ... and closed after its one answer
        # Past twice the cap, a connection is refused before it can ask anything.
        _hold(stack, server, (HARD_CONNECTION_FACTOR - 1) * MAX_CONNECTIONS, first_address=30)
        time.sleep(0.2)
        refused = _last_response(read_until_closed(_connect(server, timeout_s=1.0)))
    assert status == 503
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    assert body["error"]["type"] == "server_busy"
    assert f"{MAX_CONNECTIONS} open connections" in body["error"]["message"]
    assert answered.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in answered.lower()
    assert refused[0] == 503
    assert f"{MAX_CONNECTIONS} open connections" in refused[2]["error"]["message"]


def test_a_client_over_its_cap_may_only_ask_health(server: RunningServer) -> None:
    address = "127.0.0.3"
    with ExitStack() as stack:
        for _ in range(MAX_CONNECTIONS_PER_CLIENT):
            stack.enter_context(_connect(server, source=address))
        time.sleep(0.2)
        over = _connect(server, source=address)
        over.sendall(PREDICT_HEAD.format(length=2).encode() + b"{}")
        status, headers, body = _last_response(read_until_closed(over))
        health = _connect(server, source=address)
        health.sendall(b"HEAD /health HTTP/1.1\r\nHost: magorder\r\n\r\n")
        answered = read_until_closed(health)
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4")) as other:
            elsewhere = other.post(
                f"{server.base_url}/predict", json={"formula": "NiO", "density": 6.67}, timeout=5
            )
    assert status == 503
    assert headers["retry-after"] == "1"
    assert body["error"] == {
        "type": "server_busy",
        "message": (
            f"this client holds {MAX_CONNECTIONS_PER_CLIENT} open connections, its most; "
            "only /health is answered"
        ),
    }
    assert answered.startswith(b"HTTP/1.1 200 OK")
    assert elsewhere.status_code == 200  # another address is not held back


def _trickle(connection: socket.socket, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        try:
            connection.sendall(b" ")
        except OSError:
            return


def test_a_body_trickled_under_the_chunk_timeout_is_408_at_the_deadline(
    server: RunningServer,
) -> None:
    connection = _connect(server)
    connection.sendall(PREDICT_HEAD.format(length=10_000).encode())
    stop = threading.Event()
    threading.Thread(target=_trickle, args=(connection, 0.3, stop), daemon=True).start()
    started = time.monotonic()
    try:
        status, _, body = _last_response(read_until_closed(connection))
    finally:
        stop.set()
    assert status == 408
    assert body["error"]["message"] == (
        f"request body not all received within {BODY_DEADLINE_S:g} s"
    )
    assert time.monotonic() - started < BODY_DEADLINE_S + 2


def test_a_body_the_app_never_reads_cannot_hold_the_connection(server: RunningServer) -> None:
    connection = _connect(server, timeout_s=BODY_DEADLINE_S + BODY_DEADLINE_GRACE_S + 10)
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: magorder\r\nContent-Length: 100000\r\n\r\n")
    stop = threading.Event()
    threading.Thread(target=_trickle, args=(connection, 0.3, stop), daemon=True).start()
    started = time.monotonic()
    try:
        raw = read_until_closed(connection)
    finally:
        stop.set()
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert time.monotonic() - started < BODY_DEADLINE_S + BODY_DEADLINE_GRACE_S + 3


def test_requests_over_the_in_flight_cap_are_answered_503(server: RunningServer) -> None:
    stop = threading.Event()
    with ExitStack() as stack:
        stack.callback(stop.set)
        for _ in range(MAX_REQUESTS_IN_FLIGHT):  # each stays in flight, sending its body
            connection = stack.enter_context(_connect(server))
            connection.sendall(PREDICT_HEAD.format(length=10_000).encode())
            threading.Thread(target=_trickle, args=(connection, 0.2, stop), daemon=True).start()
        time.sleep(0.3)
        busy = httpx.get(f"{server.base_url}/model", timeout=5)
        health = httpx.get(f"{server.base_url}/health", timeout=5)  # outside the pool
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["message"] == (
        f"the server is handling {MAX_REQUESTS_IN_FLIGHT} requests, its most; retry shortly"
    )
    assert health.status_code == 200
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.base_url}/model", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the slots were never given back"
        time.sleep(0.1)


def test_an_unreadable_request_is_a_json_400(server: RunningServer) -> None:
    connection = _connect(server)
    connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    status, headers, body = _last_response(read_until_closed(connection))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["error"] == {
        "type": "bad_request",
        "message": "the request could not be read as HTTP/1.1",
    }


def _table_request(rows: int) -> bytes:
    """A POST /predict/table of ``rows`` rows, whose streamed answer is ~100 bytes a row."""
    upload = httpx.Request(
        "POST",
        "http://magorder/predict/table",
        files={"file": ("big.csv", ("formula,density\n" + "NiO,6.67\n" * rows).encode())},
    )
    body = upload.read()
    head = (
        f"POST /predict/table HTTP/1.1\r\nHost: magorder\r\n"
        f"Content-Type: {upload.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _server_peers(server: RunningServer) -> set[int]:
    """The client ports of the connections the server holds open."""
    port = int(server.base_url.rsplit(":", 1)[1])
    return {
        connection.raddr.port
        for connection in psutil.Process(server.process.pid).net_connections("tcp")
        if connection.raddr
        and connection.laddr.port == port
        and connection.status == psutil.CONN_ESTABLISHED
    }


def test_clients_that_never_read_are_dropped_at_the_write_deadline(
    server: RunningServer,
) -> None:
    request = _table_request(5000)  # a CSV answer of ~400 kB
    with ExitStack() as stack:
        readers = []
        for _ in range(MAX_REQUESTS_IN_FLIGHT):  # every request slot, as the audit found
            connection = stack.enter_context(socket.socket())
            # A small receive buffer and segment size: the server's kernel send buffer, which
            # grows with the segment size (to 4 MiB on loopback), then fills after ~100 kB, and
            # the rest waits in uvicorn's, as for a client far away that stopped reading.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            connection.settimeout(10)
            connection.connect(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
            connection.sendall(request)  # ... and never read
            readers.append(connection.getsockname()[1])
        started = time.monotonic()
        time.sleep(0.5)
        busy = httpx.get(f"{server.base_url}/model", timeout=5)  # the slots are all taken
        slowest_health_s, dropped_after = 0.0, None
        while time.monotonic() - started < WRITE_TIMEOUT_S + 8:
            asked = time.monotonic()
            assert httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200
            slowest_health_s = max(slowest_health_s, time.monotonic() - asked)
            if not _server_peers(server) & set(readers):
                dropped_after = time.monotonic() - started
                break
            time.sleep(0.2)
        # Once dropped, their slots are free again.
        fine = httpx.post(
            f"{server.base_url}/predict", json={"formula": "NiO", "density": 6.67}, timeout=5
        )
    assert busy.status_code == 503
    assert slowest_health_s < 2.0
    assert dropped_after is not None, "the clients that never read were never dropped"
    assert dropped_after > WRITE_TIMEOUT_S - 0.6
    assert fine.status_code == 200


def test_a_storm_from_one_address_leaves_health_answered(server: RunningServer) -> None:
    """300 trickled bodies and 100 idle sockets, re-opened as the server closes them."""
    storm_s, trickling_count, idle_count = 4.0, 300, 100
    heads = [
        PREDICT_HEAD.format(length=10_000).encode(),  # the app waits for the body
        b"GET /health HTTP/1.1\r\nHost: magorder\r\nContent-Length: 10000\r\n\r\n",  # it does not
    ]
    stop = threading.Event()
    opened: dict[socket.socket, tuple[float, bool]] = {}  # when, and whether it trickles
    failures: list[str] = []

    def open_one(trickles: bool) -> None:
        try:
            connection = _connect(server, timeout_s=2)
            if trickles:
                connection.sendall(heads[len(opened) % 2])
        except OSError as error:
            failures.append(repr(error))
            return
        connection.setblocking(False)
        opened[connection] = (time.monotonic(), trickles)

    def storm() -> None:
        for number in range(trickling_count + idle_count):
            open_one(number < trickling_count)
        while not stop.wait(0.3):
            for connection, (_, trickles) in list(opened.items()):
                try:
                    if connection.recv(65536) == b"":
                        raise ConnectionResetError  # closed by the server: open another
                    continue  # an answer (closed soon after)
                except BlockingIOError:  # still open, nothing to read
                    try:
                        if trickles:
                            connection.sendall(b" ")
                        continue
                    except OSError:
                        pass
                except OSError:
                    pass
                del opened[connection]
                connection.close()
                open_one(trickles)

    stormer = threading.Thread(target=storm, daemon=True)
    stormer.start()
    latencies = []
    try:
        time.sleep(0.5)
        started = time.monotonic()
        while time.monotonic() - started < storm_s:
            asked = time.monotonic()
            health = httpx.get(f"{server.base_url}/health", timeout=2)  # from 127.0.0.1 too
            latencies.append(time.monotonic() - asked)
            assert health.status_code == 200
            time.sleep(0.2)
    finally:
        stop.set()
        stormer.join(timeout=10)
    now = time.monotonic()
    kept = 0
    for connection, (since, trickles) in opened.items():
        try:
            connection.recv(65536)  # b"" or an answer: closed, or about to be
        except BlockingIOError:
            kept += trickles and now - since > 0.5
        except OSError:
            pass
        connection.close()
    assert max(latencies) < 2.0
    assert kept <= MAX_CONNECTIONS_PER_CLIENT
    assert not failures, failures[:5]
