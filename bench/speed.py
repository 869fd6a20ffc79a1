"""Speed benchmarks: latency against the stack's floor, batches, featurizer, model, cold start.

Run ``python -m bench.speed --help`` (``make bench`` runs it with the defaults). It prints a
Markdown report, the one in ``docs/benchmarks.md``, and exits non-zero if any request failed.
Targets are reported as met or not; they do not change the exit status, because timings depend
on the machine.

Latency is measured with ``wrk`` (install it: ``apt-get install wrk`` or ``brew install wrk``)
against two real uvicorn servers side by side: the unmodified service answers ``/predict``, and
`bench.floor_app`, the service plus two endpoints that do no work, answers the floor. A load
generator written in Python would spend more time per request than the server does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from app.config import DEFAULT_MODEL_DIR
from app.core.errors import ModelLoadError
from app.core.features import parse_compound, vectorize
from app.core.model_runtime import ModelRuntime
from app.core.predictor import Predictor
from bench.floor_app import FLOOR_APP, FLOOR_PATH, SAME_SIGNATURE_PATH
from bench.server import (
    REPO_ROOT,
    SERVICE_APP,
    running_server,
)

MIB = 1024 * 1024
WRK_SCRIPT = REPO_ROOT / "bench" / "wrk_post.lua"
WRK_NEW_FORMULAS = 20 * 19 * 6 * 4 * 4 * 12
"""Distinct formulas the wrk script's "new" mode can send (see bench/wrk_post.lua)."""
BATCH_SIZE = 1000

TARGET_P50_RATIO = 1.3
TARGET_BATCH_MS = 50.0
TARGET_COLD_START_S = 10.0
TARGET_MAX_OVER_P50 = 10.0
TAIL_CONCURRENCY = 8

_METALS: tuple[str, ...] = ("Li", "Na", "Mg", "Ca", "Sr", "Ba", "Y", "La", "Ti", "V")
_METALS += ("Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Zr", "Nb", "Mo")


def quaternary_formulas(start: int, count: int) -> list[str]:
    """Return distinct oxides of three metals, such as ``Li2Na3MgO7``.

    They are never among the ternaries the wrk script sends, so a batch of them is new to the
    server's parse cache.

    Args:
        start: Number of the first formula.
        count: How many formulas.

    Returns:
        ``count`` distinct formulas.
    """
    combos = itertools.islice(
        itertools.product(
            itertools.permutations(_METALS, 3), range(1, 4), range(1, 4), range(1, 10)
        ),
        start,
        start + count,
    )
    return [f"{a}{i}{b}{j}{c}O{o}" for (a, b, c), i, j, o in combos]


@dataclass(frozen=True, slots=True)
class WrkRun:
    """Figures of one wrk run."""

    requests: int
    seconds: float
    p50_us: int
    p99_us: int
    max_us: int
    errors: int

    @property
    def per_second(self) -> float:
        """Requests completed per second."""
        return self.requests / self.seconds


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A row of the latency table: what wrk sends where."""

    label: str
    app: str  # the uvicorn app serving it: FLOOR_APP or SERVICE_APP
    path: str
    mode: str  # "known" or "new": see bench/wrk_post.lua


ENDPOINTS = (
    Endpoint("floor: `POST /floor` (no work)", FLOOR_APP, FLOOR_PATH, "known"),
    Endpoint("`POST /floor/same-signature`", FLOOR_APP, SAME_SIGNATURE_PATH, "known"),
    Endpoint("`POST /predict`, 24 known formulas", SERVICE_APP, "/predict", "known"),
    Endpoint("`POST /predict`, a new formula each time", SERVICE_APP, "/predict", "new"),
)


def _wrk(
    base_urls: Mapping[str, str], endpoint: Endpoint, concurrency: int, seconds: float, offset: int
) -> WrkRun:
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        base_urls[endpoint.app],
        "--",
        endpoint.path,
        endpoint.mode,
        str(offset),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return WrkRun(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        p50_us=figures["p50_us"],
        p99_us=figures["p99_us"],
        max_us=figures["max_us"],
        errors=figures["errors"],
    )


@dataclass
class Report:
    """The Markdown report, and whether anything failed."""

    lines: list[str]
    failures: list[str]
    targets: list[tuple[str, str, bool]]

    def add(self, *lines: str) -> None:
        """Append lines, printing them as they come."""
        for line in lines:
            print(line, flush=True)
        self.lines.extend(lines)

    def target(self, name: str, measured: str, met: bool) -> None:
        """Record a target and whether it was met."""
        self.targets.append((name, measured, met))


def describe_machine() -> str:
    """The CPU, core count and package versions of this machine, in one line."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    versions = ", ".join(
        f"{package} {importlib.metadata.version(package)}"
        for package in ("tensorflow", "ai-edge-litert", "fastapi", "uvicorn", "pymatgen")
    )
    return (
        f"{psutil.cpu_count()} CPUs ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"{versions}"
    )


def _median_us(function: Callable[[], object], calls: int) -> float:
    for _ in range(min(calls, 50)):
        function()
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def featurizer_and_model(report: Report, model_dir: Path, quick: bool) -> None:
    """In-process timings of the featurizer and of one model call on each runtime."""
    count = 2000 if quick else 20000
    formulas = quaternary_formulas(400_000, count)  # a range no other part of the run uses
    started = time.perf_counter()
    compounds = [parse_compound(formula, 5.0) for formula in formulas]
    cold_us = (time.perf_counter() - started) / count * 1e6
    recent = formulas[-BATCH_SIZE:]  # still in the parse cache
    started = time.perf_counter()
    for formula in recent:
        parse_compound(formula, 5.0)
    cached_us = (time.perf_counter() - started) / len(recent) * 1e6
    batch = compounds[:BATCH_SIZE]
    vector_us = _median_us(lambda: vectorize(batch), 20) / BATCH_SIZE
    report.add(
        "",
        "### Featurizer and model, in process",
        "",
        "| figure | µs |",
        "| --- | --- |",
        f"| parse + validate a formula never seen before (pymatgen) | {cold_us:.1f} |",
        f"| parse + validate a formula in the parse cache | {cached_us:.1f} |",
        f"| build the 119-vector, per row of a {BATCH_SIZE}-row batch | {vector_us:.2f} |",
    )
    features = vectorize(batch)
    for runtime in (ModelRuntime.LITERT, ModelRuntime.TENSORFLOW):
        try:
            predictor = Predictor.load(model_dir, runtime)
        except ModelLoadError as exc:
            # LiteRT's compile of a model can differ from the SavedModel on one processor and
            # not another (the service then serves on TensorFlow): said, not a failed run.
            report.add(f"| model call on {runtime} | not run: {' '.join(str(exc).split())} |")
            continue
        heads = [("model call", predictor.predict_proba)]
        if predictor.experiment is not None:
            heads.append(("experiment head call", predictor.experiment.outputs))
        for what, model in heads:
            one = _median_us(lambda: model(features[:1]), 2000)  # noqa: B023 - called right away
            many = _median_us(lambda: model(features), 50) / BATCH_SIZE  # noqa: B023
            report.add(
                f"| {what} on {runtime}, batch of 1 | {one:.1f} |",
                f"| {what} on {runtime}, per row of a batch of {BATCH_SIZE} | {many:.2f} |",
            )


def cold_start(report: Report, model_dir: Path, runs: int) -> None:
    """Time from starting the service's process to its first ``/health`` 200."""
    timings = []
    rss = []
    for _ in range(runs):
        started = time.perf_counter()
        with running_server(model_dir) as server:
            timings.append(time.perf_counter() - started)
            rss.append(psutil.Process(server.process.pid).memory_info().rss / MIB)
    report.add(
        "",
        f"### Cold start: `uvicorn {SERVICE_APP}` started to first `/health` 200",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| runs | {runs} |",
        f"| median / slowest | {statistics.median(timings):.2f} / {max(timings):.2f} s |",
        f"| resident memory when healthy | {statistics.median(rss):.0f} MiB |",
    )
    report.target(
        f"cold start ≤ {TARGET_COLD_START_S:g} s",
        f"{max(timings):.2f} s (slowest of {runs})",
        max(timings) <= TARGET_COLD_START_S,
    )


def _offsets() -> Iterator[int]:
    stride = 40_000  # more requests than one run of a few seconds sends
    yield from range(0, WRK_NEW_FORMULAS - stride + 1, stride)
    raise RuntimeError("out of new formulas: use fewer or shorter runs")


def latency(
    report: Report,
    base_urls: Mapping[str, str],
    levels: Sequence[int],
    rounds: int,
    seconds: float,
) -> None:
    """Wrk against the floor and ``/predict``, alternating, at each concurrency level.

    Args:
        report: Receives the table and the targets.
        base_urls: Where each app of `ENDPOINTS` is served.
        levels: Concurrency levels.
        rounds: wrk runs per endpoint and level.
        seconds: Length of one wrk run.
    """
    offsets = _offsets()
    for endpoint in ENDPOINTS:  # warm-up: the first requests of a process are slower
        _wrk(base_urls, endpoint, 4, 1, next(offsets) if endpoint.mode == "new" else 0)
    report.add(
        "",
        f"### Latency: wrk, 1 thread, {rounds} rounds of {seconds:g} s per row, alternating",
        "",
        "p50 and p99 are medians over the rounds; max is the slowest request of all rounds.",
        "",
        "| concurrency | endpoint | p50 µs | p99 µs | max µs | requests/s | p50 / floor |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    )
    for concurrency in levels:
        runs: dict[Endpoint, list[WrkRun]] = {endpoint: [] for endpoint in ENDPOINTS}
        for _ in range(rounds):
            for endpoint in ENDPOINTS:
                offset = next(offsets) if endpoint.mode == "new" else 0
                runs[endpoint].append(_wrk(base_urls, endpoint, concurrency, seconds, offset))
        floor_p50 = statistics.median(run.p50_us for run in runs[ENDPOINTS[0]])
        for endpoint, endpoint_runs in runs.items():
            p50 = statistics.median(run.p50_us for run in endpoint_runs)
            p99 = statistics.median(run.p99_us for run in endpoint_runs)
            slowest = max(run.max_us for run in endpoint_runs)
            per_second = statistics.median(run.per_second for run in endpoint_runs)
            errors = sum(run.errors for run in endpoint_runs)
            if errors:
                report.failures.append(f"{endpoint.label} at {concurrency}: {errors} errors")
            report.add(
                f"| {concurrency} | {endpoint.label} | {p50:.0f} | {p99:.0f} | {slowest} | "
                f"{per_second:.0f} | {p50 / floor_p50:.2f} |"
            )
            if endpoint.path != "/predict":
                continue
            report.target(
                f"`/predict` p50 ≤ {TARGET_P50_RATIO:g} x floor p50, concurrency {concurrency}, "
                f"{endpoint.mode} formulas",
                f"{p50 / floor_p50:.2f} x",
                p50 / floor_p50 <= TARGET_P50_RATIO,
            )
            if concurrency == TAIL_CONCURRENCY:
                report.target(
                    f"no `/predict` slower than {TARGET_MAX_OVER_P50:g} x p50 at concurrency "
                    f"{concurrency}, {endpoint.mode} formulas",
                    f"max {slowest} µs = {slowest / p50:.1f} x p50",
                    slowest <= TARGET_MAX_OVER_P50 * p50,
                )


def _server_timing(header: str) -> dict[str, float]:
    stages = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        stages[name] = float(duration)
    return stages


def batches(report: Report, base_url: str, repeats: int) -> None:
    """``POST /predict/batch`` of 1,000 formulas: end to end, and split by Server-Timing."""
    rows = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for label, start in (("new to the server", 0), ("repeated (parse cache)", None)):
            timings: list[tuple[float, dict[str, float]]] = []
            for repeat in range(repeats + 1):
                offset = repeat * BATCH_SIZE if start is not None else 300_000
                items = [
                    {"formula": formula, "density": 1 + (index % 997) / 100}
                    for index, formula in enumerate(quaternary_formulas(offset, BATCH_SIZE))
                ]
                started = time.perf_counter()
                response = client.post("/predict/batch", json={"items": items})
                elapsed = time.perf_counter() - started
                ok = sum(result["status"] == "ok" for result in response.json()["results"])
                if response.status_code != 200 or ok != BATCH_SIZE:
                    report.failures.append(f"batch: {response.status_code}, {ok} items ok")
                if repeat:  # the first one warms up (and fills the cache for "repeated")
                    timings.append((elapsed, _server_timing(response.headers["server-timing"])))
            end_to_end = statistics.median(t for t, _ in timings) * 1e3
            featurize = statistics.median(s["featurize"] for _, s in timings)
            model = statistics.median(s["model"] for _, s in timings)
            both = [s["featurize"] + s["model"] for _, s in timings]
            rows.append(
                f"| {label} | {end_to_end:.1f} | {featurize:.1f} | {model:.2f} | "
                f"{statistics.median(both):.1f} / {max(both):.1f} | "
                f"{BATCH_SIZE / end_to_end * 1e3:,.0f} |"
            )
            if start is not None:
                report.target(
                    f"{BATCH_SIZE}-formula batch, featurizer + model ≤ {TARGET_BATCH_MS:g} ms",
                    f"{statistics.median(both):.1f} ms (median), {max(both):.1f} ms (slowest)",
                    max(both) <= TARGET_BATCH_MS,
                )
    report.add(
        "",
        f"### `POST /predict/batch` of {BATCH_SIZE} formulas, {repeats} requests each",
        "",
        "End to end is the client's wall time (httpx, loopback); featurize (validating items, "
        "parsing, building vectors) and model are the server's `Server-Timing` stages; "
        "medians, and the slowest for featurize + model.",
        "",
        "| formulas | end to end ms | featurize ms | model ms | featurize + model ms "
        "(median / slowest) | formulas/s end to end |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the Markdown report.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when omitted.

    Returns:
        0 when every request succeeded, else 1.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per row (3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a wrk run (3)")
    parser.add_argument("--batch-repeats", type=int, default=10, help="batches timed (10)")
    parser.add_argument("--cold-starts", type=int, default=3, help="service starts timed (3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run that checks the benchmark works; its figures mean little",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.rounds, args.seconds = [1, TAIL_CONCURRENCY], 1, 1.0
        args.batch_repeats, args.cold_starts = 2, 1
    if shutil.which("wrk") is None:
        print("wrk not found: install it (apt-get install wrk, brew install wrk)", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    report = Report(lines=[], failures=[], targets=[])
    report.add(
        f"## Speed ({time.strftime('%Y-%m-%d')}, model at {args.model_dir.name})",
        "",
        f"Machine: {describe_machine()}.",
        "",
        f"Command: `{' '.join(['python -m bench.speed', *(argv or sys.argv[1:])])}`",
    )
    featurizer_and_model(report, args.model_dir, args.quick)
    cold_start(report, args.model_dir, args.cold_starts)
    with (
        running_server(args.model_dir) as service,
        running_server(args.model_dir, app=FLOOR_APP) as floor,
    ):
        base_urls = {SERVICE_APP: service.base_url, FLOOR_APP: floor.base_url}
        latency(report, base_urls, args.concurrency, args.rounds, args.seconds)
        batches(report, service.base_url, args.batch_repeats)
        rss = psutil.Process(service.process.pid).memory_info().rss / MIB
    report.add("", f"Resident memory of the benchmarked service at the end: {rss:.0f} MiB.")
    report.add("", "### Targets", "", "| target | measured | met |", "| --- | --- | --- |")
    for name, measured, met in report.targets:
        report.add(f"| {name} | {measured} | {'yes' if met else '**no**'} |")
    for failure in report.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
