"""Bounded loopback load test: a fixed number of requests at a fixed concurrency.

Run ``python -m bench.load_test --help``. It starts a real uvicorn serving magorder, sends a
mix of valid predictions, invalid inputs and batches, and checks that no request fails
unexpectedly and that the server's resident memory does not grow; then it runs the hostile
clients of `bench.hostile` (held connections, oversized headers and error bodies) against the
same server. It stops by itself and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import hostile
from bench.server import running_server

MIB = 1024 * 1024

VALID = [
    ("Fe2O3", 5.24),
    ("NiO", 6.67),
    ("NaCl", 2.17),
    ("MnO", 5.37),
    ("BaTiO3", 6.02),
    ("Ca(OH)2", 2.21),
    ("Gd2O3", 7.41),
    ("CoFe2O4", 5.3),
    ("Ba0.5Sr0.5TiO3", 5.5),
    ("LiFePO4", 3.6),
]
INVALID: list[dict[str, Any]] = [
    {"formula": "Xx2", "density": 1.0},
    {"formula": "Fe2O3", "density": -1.0},
    {"formula": "Fe3+", "density": 5.0},
    {"formula": "", "density": 5.0},
    {"formula": "Fe2O3"},
]


@dataclass
class Tally:
    """What the load test saw."""

    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)


def _request_for(number: int) -> tuple[str, Any, int]:
    """Return (path, body, expected status) of request number ``number``: a fixed mix."""
    if number % 10 == 0:
        index = number // 10
        items = [{"formula": f, "density": d} for f, d in VALID[index % 3 :] + VALID[: index % 3]]
        return "/predict/batch", {"items": items * 2}, 200
    if number % 10 == 5:
        return "/predict", INVALID[number % len(INVALID)], 422
    formula, density = VALID[number % len(VALID)]
    return "/predict", {"formula": formula, "density": density}, 200


async def _worker(
    client: httpx.AsyncClient, numbers: range, stride: int, tally: Tally, record: bool
) -> None:
    for number in numbers[::stride]:
        path, body, expected = _request_for(number)
        started = time.perf_counter()
        try:
            response = await client.post(path, json=body)
        except httpx.HTTPError as exc:
            tally.unexpected.append(f"#{number} {path}: {type(exc).__name__} {exc}")
            continue
        if record:
            tally.latencies_s.append(time.perf_counter() - started)
            tally.statuses[f"{path} {response.status_code}"] += 1
        if response.status_code != expected:
            tally.unexpected.append(f"#{number} {path}: {response.status_code} {response.text}")


async def _run(base_url: str, pid: int, requests: int, concurrency: int, tally: Tally) -> float:
    server = psutil.Process(pid)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:
        warmup = range(min(200, requests))
        await asyncio.gather(
            *(_worker(client, warmup[i:], concurrency, Tally(), False) for i in range(concurrency))
        )
        tally.rss_bytes.append(server.memory_info().rss)
        started = time.perf_counter()
        rounds = 10
        per_round = requests // rounds
        for round_number in range(rounds):
            numbers = range(round_number * per_round, (round_number + 1) * per_round)
            await asyncio.gather(
                *(
                    _worker(client, numbers[i:], concurrency, tally, True)
                    for i in range(concurrency)
                )
            )
            tally.rss_bytes.append(server.memory_info().rss)
        return time.perf_counter() - started


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    """Run the load test and print a Markdown report.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when omitted.

    Returns:
        0 when no request failed unexpectedly and memory stayed within bounds, else 1.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.load_test", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000, help="requests to send (5000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    parser.add_argument("--model-dir", type=Path, help="model to serve (the committed one)")
    parser.add_argument(
        "--max-growth-mib",
        type=float,
        default=20.0,
        help="most RSS growth allowed between the first and last tenth of the run (20)",
    )
    args = parser.parse_args(argv)

    tally = Tally()
    print(f"starting server; {args.requests} requests at concurrency {args.concurrency}")
    with running_server(args.model_dir) as server:
        elapsed = asyncio.run(
            _run(server.base_url, server.process.pid, args.requests, args.concurrency, tally)
        )
        # Then the hostile clients, against the same server.
        process = psutil.Process(server.process.pid)
        rss_before = process.memory_info().rss
        host, port = server.base_url.removeprefix("http://").split(":")
        hostile_report = hostile.run_checks(host, int(port))
        hostile_growth_mib = (process.memory_info().rss - rss_before) / MIB
    sent = sum(tally.statuses.values())
    growth_mib = (tally.rss_bytes[-1] - tally.rss_bytes[1]) / MIB
    hostile_report.check(
        hostile_growth_mib <= args.max_growth_mib,
        f"RSS grew by {hostile_growth_mib:.1f} MiB under the hostile clients",
    )
    ok = not tally.unexpected and growth_mib <= args.max_growth_mib and not hostile_report.failures

    print(f"\n### Load test ({time.strftime('%Y-%m-%d')}, {platform.platform()})\n")
    print(
        f"`python -m bench.load_test --requests {args.requests} "
        f"--concurrency {args.concurrency}` on {psutil.cpu_count()} CPUs:\n"
    )
    print("| figure | value |\n| --- | --- |")
    print(f"| requests (after 200 warm-up) | {sent} in {elapsed:.1f} s ({sent / elapsed:.0f}/s) |")
    for kind, count in sorted(tally.statuses.items()):
        print(f"| `{kind}` | {count} |")
    print(f"| unexpected statuses or transport errors | {len(tally.unexpected)} |")
    lat = tally.latencies_s
    print(
        f"| latency p50 / p99 / max | {_percentile(lat, 50) * 1e3:.1f} / "
        f"{_percentile(lat, 99) * 1e3:.1f} / {max(lat) * 1e3:.1f} ms |"
    )
    rss = " → ".join(f"{b / MIB:.0f}" for b in tally.rss_bytes)
    print(f"| server RSS after warm-up, then each tenth (MiB) | {rss} |")
    print(
        f"| RSS growth, first tenth to end | {growth_mib:+.1f} MiB "
        f"(limit {args.max_growth_mib:g}) |"
    )
    print("\nThen, against the same server:\n")
    print("| hostile client | what the server did |\n| --- | --- |")
    for name, value in hostile_report.rows:
        print(f"| {name} | {value} |")
    print(f"| server RSS growth during the hostile clients | {hostile_growth_mib:+.1f} MiB |")
    for line in tally.unexpected[:10]:
        print(f"unexpected: {line}", file=sys.stderr)
    for failure in hostile_report.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"\nresult: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
