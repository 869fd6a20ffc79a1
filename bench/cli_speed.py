"""Benchmark of ``magorder predict``: 100,000 distinct formulas, in-process and via a server.

Runs the real command (``python -m app.cli``) on CSV files of distinct quaternary oxides
written to a temporary directory, and prints a Markdown report: wall time from process start
to exit (model loading included), rows per second once loaded, and peak resident memory for
inputs of different lengths, which shows whether memory grows with the file.
``python -m bench.cli_speed --help``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from app.config import DEFAULT_MODEL_DIR
from bench.server import REPO_ROOT, running_server
from bench.speed import describe_machine, quaternary_formulas

MIB = 1024 * 1024
TARGET_ROWS = 100_000
TARGET_S = 20.0
_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class CommandRun:
    """Figures of one run of the command."""

    rows: int
    wall_s: float
    peak_rss_mib: float


def write_candidates(path: Path, rows: int, seed: int = 0) -> Path:
    """Write a CSV of ``rows`` distinct formulas with plausible densities."""
    rng = random.Random(seed)  # noqa: S311 - densities for a benchmark, not secrets
    with path.open("w", encoding="utf-8") as out:
        out.write("id,formula,density\n")
        for number, formula in enumerate(quaternary_formulas(0, rows)):
            out.write(f"{number},{formula},{rng.uniform(2.0, 8.0):.3f}\n")
    return path


def run_command(arguments: list[str], rows: int) -> CommandRun:
    """Run ``magorder`` to the end, sampling its resident memory.

    Raises:
        RuntimeError: The command failed.
    """
    command = [sys.executable, "-m", "app.cli", *arguments, "--quiet"]
    started = time.perf_counter()
    process = psutil.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(_POLL_S)
    wall = time.perf_counter() - started
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{stderr}")
    return CommandRun(rows=rows, wall_s=wall, peak_rss_mib=peak / MIB)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its report.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when omitted.

    Returns:
        0 when every run succeeded (targets are reported, not enforced).
    """
    parser = argparse.ArgumentParser(prog="python -m bench.cli_speed", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--rows", type=int, default=TARGET_ROWS, help="rows of the main run")
    parser.add_argument(
        "--quick", action="store_true", help="a short run that checks the benchmark works"
    )
    args = parser.parse_args(argv)
    sizes = [args.rows // 10, args.rows, args.rows * 2]
    if args.quick:
        sizes = [200, 2_000]
    model = ["--model-dir", str(args.model_dir)]
    lines = [
        f"## `magorder predict` ({time.strftime('%Y-%m-%d')}, model at {args.model_dir.name})",
        "",
        f"Machine: {describe_machine()}.",
        "",
        f"Command: `{' '.join(['python -m bench.cli_speed', *(argv or sys.argv[1:])])}`",
        "",
        "| mode | rows | wall s (start to exit) | rows/s after start-up | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        empty = write_candidates(Path(scratch) / "empty.csv", 0)
        startup = run_command(["predict", str(empty), *model], 0)
        lines.append(
            f"| in-process, header only (start-up) | 0 | {startup.wall_s:.1f} | n/a | "
            f"{startup.peak_rss_mib:.0f} |"
        )
        runs = {}
        for size in sizes:
            path = write_candidates(Path(scratch) / f"{size}.csv", size)
            run = runs[size] = run_command(["predict", str(path), *model], size)
            speed = size / max(run.wall_s - startup.wall_s, 1e-9)
            lines.append(
                f"| in-process | {size:,} | {run.wall_s:.1f} | {speed:,.0f} | "
                f"{run.peak_rss_mib:.0f} |"
            )
        remote_rows = sizes[1]
        with running_server(args.model_dir) as server:
            path = Path(scratch) / f"{remote_rows}.csv"
            remote = run_command(["predict", str(path), "--url", server.base_url], remote_rows)
        lines.append(
            f"| `--url` (server on the same machine) | {remote_rows:,} | {remote.wall_s:.1f} | "
            f"{remote_rows / remote.wall_s:,.0f} | {remote.peak_rss_mib:.0f} |"
        )
    main_run = runs[sizes[1]]
    growth = runs[sizes[-1]].peak_rss_mib - runs[sizes[0]].peak_rss_mib
    if main_run.rows < TARGET_ROWS:
        verdict = f"not measured: {main_run.rows:,} rows only"
    else:
        verdict = "yes" if main_run.wall_s <= TARGET_S else "**no**"
    lines += [
        "",
        f"Peak memory from {sizes[0]:,} to {sizes[-1]:,} rows: {growth:+.0f} MiB.",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| {TARGET_ROWS:,} distinct formulas in-process ≤ {TARGET_S:g} s, start-up included | "
        f"{main_run.wall_s:.1f} s for {main_run.rows:,} rows | {verdict} |",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
