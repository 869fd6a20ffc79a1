"""Hostile clients against a running magorder: lockout, oversized headers, oversized error bodies.

Run ``python -m bench.hostile http://127.0.0.1:8000`` against a server that is up. It uses
the standard library only, so that ``make docker-check`` can run it with the host's Python
against the container and the compose stack. It:

1. holds 300 connections open (two thirds send nothing, one third half a request head) and
   times a fresh client's requests meanwhile; every one must be answered 200 within 1 s;
2. sends a request whose headers are 20 KiB (431 expected) and, at once, ten whose headers
   never end (the server must cut each one off within 10 s; nginx reads and drops what
   follows a refusal for 2 s, uvicorn stops at once);
3. sends an 800 KiB batch whose items carry 120 unknown keys each, and requires the error
   report to be smaller than the request.

It prints a Markdown table and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
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
    host: str, port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=30)
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


def check_lockout(host: str, port: int, report: Report) -> None:
    """A fresh client is served at once while many idle or slow connections are held."""
    with ExitStack() as stack:
        for number in range(HELD_CONNECTIONS):
            connection = stack.enter_context(socket.create_connection((host, port), timeout=30))
            if number % 3 == 0:
                connection.sendall(b"POST /predict HTTP/1.1\r\nHost: magorder\r\n")
        time.sleep(0.5)
        latencies, statuses = [], []
        predict = json.dumps({"formula": "NiO", "density": 6.67}).encode()
        for number in range(FRESH_REQUESTS):
            started = time.perf_counter()
            if number % 2:
                status, _ = _request(host, port, "POST", "/predict", predict)
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


def run_checks(host: str, port: int) -> Report:
    """Run every hostile client against a server and return what they saw."""
    report = Report()
    for check in (check_lockout, check_headers, check_error_size):
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
