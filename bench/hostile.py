"""Hostile clients against a running magorder: lockout, oversized headers, oversized error bodies.

Run ``python -m bench.hostile http://127.0.0.1:8000`` against a server that is up. It uses
the standard library only, so that ``make docker-check`` can run it with the host's Python
against the container and the compose stack. It:

1. holds 300 connections open (two thirds send nothing, one third half a request head) and
   times a fresh client's requests meanwhile; every one must be answered 200 within 1 s. On
   loopback the held connections come from 127.0.0.2, another client than the fresh one
   (the server caps the connections of one address); where the server still sees one
   address for both (Docker's published port), the fresh client's ``POST /predict`` may be
   the per-client cap's 503 instead, but its ``GET /health`` must still be 200;
2. sends a request whose headers are 20 KiB (431 expected) and, at once, ten whose headers
   never end (the server must cut each one off within 10 s; nginx reads and drops what
   follows a refusal for 2 s, uvicorn stops at once);
3. sends an 800 KiB batch whose items carry 120 unknown keys each, and requires the error
   report to be smaller than the request;
4. opens 300 connections that trickle a request body a byte at a time, from the health
   check's own address, and asks ``GET /health`` meanwhile: every answer must be a 200
   within 2 s.

It prints a Markdown table and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HELD_CONNECTIONS = 300
FRESH_REQUESTS = 40
FRESH_LIMIT_S = 1.0
BIG_HEADER_BYTES = 20 * 1024
ENDLESS_HEADER_CONNECTIONS = 10
ENDLESS_GIVE_UP_S = 10.0
CROWD_SOURCE = "127.0.0.2"  # Linux routes all of 127/8 to the loopback interface
TRICKLING_CONNECTIONS = 300
TRICKLE_EVERY_S = 0.5
TRICKLE_STORM_S = 5.0
HEALTH_LIMIT_S = 2.0


@dataclass
class Report:
    """The figures measured and the checks that failed."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, failure: str) -> None:
        """Record a failure unless ``ok``."""
        if not ok:
            self.failures.append(failure)


def _request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    timeout_s: float = 30.0,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.") else 0


def _read_some(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65536)
    except OSError:
        return b""


def _crowd_source(host: str) -> tuple[str, int] | None:
    """Another loopback address for the held connections, where the server is on loopback."""
    if host not in ("127.0.0.1", "localhost"):
        return None
    try:
        with socket.socket() as probe:
            probe.bind((CROWD_SOURCE, 0))
    except OSError:  # not Linux: 127.0.0.1 is the only loopback address
        return None
    return (CROWD_SOURCE, 0)


def _over_client_cap(status: int, body: bytes) -> bool:
    """Whether an answer is the 503 of the server's cap on one client's connections."""
    return status == 503 and b'"server_busy"' in body and b"this client holds" in body


def check_lockout(host: str, port: int, report: Report) -> None:
    """A fresh client is served at once while many idle or slow connections are held."""
    source = _crowd_source(host)
    with ExitStack() as stack:
        for number in range(HELD_CONNECTIONS):
            connection = stack.enter_context(
                socket.create_connection((host, port), timeout=30, source_address=source)
            )
            if number % 3 == 0:
                connection.sendall(b"POST /predict HTTP/1.1\r\nHost: magorder\r\n")
        time.sleep(0.5)
        latencies, statuses = [], []
        capped = 0
        predict = json.dumps({"formula": "NiO", "density": 6.67}).encode()
        for number in range(FRESH_REQUESTS):
            started = time.perf_counter()
            if number % 2:
                status, body = _request(host, port, "POST", "/predict", predict)
                if _over_client_cap(status, body):
                    capped, status = capped + 1, 200  # one address for both: as designed
            else:
                status, _ = _request(host, port, "GET", "/health")
            latencies.append(time.perf_counter() - started)
            statuses.append(status)
    ok = sum(status == 200 for status in statuses)
    p50 = statistics.median(latencies) * 1e3
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98] * 1e3
    report.rows += [
        ("connections held open (idle or half a head)", str(HELD_CONNECTIONS)),
        (
            "fresh client meanwhile: 200s, latency p50 / p99 / max",
            f"{ok} of {FRESH_REQUESTS}; {p50:.1f} / {p99:.1f} / {max(latencies) * 1e3:.1f} ms",
        ),
    ]
    if capped:
        report.rows.append(
            (
                "fresh POST /predict seen at the held connections' address: 503 (client cap)",
                f"{capped}",
            )
        )
    report.check(ok == FRESH_REQUESTS, f"fresh client got statuses {sorted(set(statuses))}")
    report.check(max(latencies) < FRESH_LIMIT_S, f"a fresh request took {max(latencies):.2f} s")


def check_headers(host: str, port: int, report: Report) -> None:
    """Oversized headers are refused with 431, endless ones cut off early."""
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(
            b"GET /health HTTP/1.1\r\nHost: magorder\r\nX-Big: "
            + b"x" * BIG_HEADER_BYTES
            + b"\r\n\r\n"
        )
        status = _status_of(_read_some(connection))
    report.rows.append((f"a {BIG_HEADER_BYTES // 1024} KiB header", f"{status}"))
    report.check(status == 431, f"a {BIG_HEADER_BYTES} byte header was answered {status}")
    results: list[tuple[int, float, bool]] = []

    def endless() -> None:
        sent, started, cut = 0, time.monotonic(), False
        with socket.create_connection((host, port), timeout=30) as connection:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: magorder\r\nX-Endless: ")
            try:
                while time.monotonic() - started < ENDLESS_GIVE_UP_S:
                    connection.sendall(chunk)
                    sent += len(chunk)
            except OSError:  # the server closed the connection
                cut = True
        results.append((sent, time.monotonic() - started, cut))

    chunk = b"y" * (1 << 16)
    senders = [threading.Thread(target=endless) for _ in range(ENDLESS_HEADER_CONNECTIONS)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    most_mib = max(sent for sent, _, _ in results) / (1 << 20)
    longest_s = max(took for _, took, _ in results)
    report.rows.append(
        (
            f"{ENDLESS_HEADER_CONNECTIONS} endless headers at once: most sent, longest held",
            f"{most_mib:.1f} MiB, {longest_s:.1f} s",
        )
    )
    report.check(
        all(cut for _, _, cut in results),
        f"an endless header was still being read after {ENDLESS_GIVE_UP_S:g} s",
    )


def check_error_size(host: str, port: int, report: Report) -> None:
    """An error report never outgrows the request it describes."""
    unknown = {f"unknown_key_{number}": number for number in range(120)}
    items = [{"formula": "NiO", "density": 6.67, **unknown} for _ in range(240)]
    body = json.dumps({"items": items}).encode()
    status, answer = _request(host, port, "POST", "/predict/batch", body)
    report.rows.append(
        (
            "batch with 120 unknown keys per item: request → response",
            f"{len(body) / 1024:.0f} KiB → {status}, {len(answer) / 1024:.0f} KiB",
        )
    )
    report.check(status == 200, f"the batch of unknown keys got {status}")
    report.check(len(answer) < len(body), f"its error report is {len(answer)} bytes")


def check_trickle_storm(host: str, port: int, report: Report) -> None:
    """Bodies trickled over many connections from one address leave /health answered."""
    head = (
        b"POST /predict HTTP/1.1\r\nHost: magorder\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    stop = threading.Event()
    with ExitStack() as stack:
        trickling = []
        for _ in range(TRICKLING_CONNECTIONS):
            connection = stack.enter_context(socket.create_connection((host, port), timeout=30))
            connection.sendall(head)
            trickling.append(connection)

        def trickle() -> None:
            while not stop.wait(TRICKLE_EVERY_S):
                for connection in trickling:
                    # Refused or closed by the server, as it may: nothing more to send there.
                    with contextlib.suppress(OSError):
                        connection.sendall(b" ")

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        stack.callback(sender.join)
        stack.callback(stop.set)
        latencies, statuses = [], []
        started = time.monotonic()
        while time.monotonic() - started < TRICKLE_STORM_S:
            asked = time.perf_counter()
            try:
                status, _ = _request(host, port, "GET", "/health", timeout_s=HEALTH_LIMIT_S)
            except OSError:  # timed out, refused or reset
                status = 0
            latencies.append(time.perf_counter() - asked)
            statuses.append(status)
            time.sleep(0.25)
    ok = sum(status == 200 for status in statuses)
    report.rows.append(
        (
            f"{TRICKLING_CONNECTIONS} bodies trickled from one address: /health 200s, slowest",
            f"{ok} of {len(statuses)}; {max(latencies) * 1e3:.0f} ms",
        )
    )
    report.check(ok == len(statuses), f"/health got {sorted(set(statuses))} in a trickle storm")
    report.check(
        max(latencies) < HEALTH_LIMIT_S, f"/health took {max(latencies):.2f} s in a trickle storm"
    )


def run_checks(host: str, port: int) -> Report:
    """Run every hostile client against a server and return what they saw."""
    report = Report()
    for check in (check_lockout, check_headers, check_error_size, check_trickle_storm):
        check(host, port, report)
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the hostile clients and print what they saw.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when omitted.

    Returns:
        0 when every check passed, else 1.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("url", help="where the server listens, e.g. http://127.0.0.1:8000")
    args = parser.parse_args(argv)
    where = urlsplit(args.url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    report = run_checks(host, port)
    print("| hostile client | what the server did |\n| --- | --- |")
    for name, value in report.rows:
        print(f"| {name} | {value} |")
    for failure in report.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"\nresult: {'PASS' if not report.failures else 'FAIL'}")
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
