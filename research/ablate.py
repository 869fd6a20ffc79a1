"""The ``ablate`` command: score the variants of the MP recipe on one grouped split.

Run ``python -m research.ablate --data SNAPSHOT [--run-dir DIR] [--epochs N] ...`` (the
options of ``python -m model_training evaluate``'s data, split and fitting). It fits every
variant in `research.ablation` beside LightGBM on the same rows, prints their scores as a
Markdown table and saves it as ``ablation.md`` in the run directory; it exports nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from model_training.__main__ import add_training_options, setup_logging
from model_training.data import SnapshotError
from model_training.mp.config import Preset
from model_training.mp.data import load_labelled_data
from model_training.mp.run import model_config_from, train_config_from
from model_training.pipeline import data_and_split, log_stage, strategy_of, verbosity
from model_training.strategy import StrategyUnavailableError
from research.ablation import ablation_table, run_ablation

ABLATION_FILENAME = "ablation.md"


def ablate(args: argparse.Namespace, *, command_line: str) -> str:
    """Fit and score the variants of the recipe on one grouped split (nothing is exported).

    Args:
        args: Parsed ``ablate`` arguments.
        command_line: The command as typed, written at the top of the saved table.

    Returns:
        The Markdown table of every variant, as printed and saved in the run directory.
    """
    data, split = data_and_split(args, load_labelled_data)
    results = run_ablation(
        data,
        split,
        model_config=model_config_from(args, Preset.MAGORDER),
        train_config=train_config_from(args, Preset.MAGORDER),
        strategy=strategy_of(args),
        verbose=verbosity(args),
        on_stage=log_stage,
    )
    table = ablation_table(results)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / ABLATION_FILENAME).write_text(f"`{command_line}`\n\n{table}\n")
    return f"{table}\n\nsaved to {args.run_dir / ABLATION_FILENAME}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ablate`` command.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m research.ablate",
        description="Fit the variants of the recipe that were tried (ensemble size, dropout, "
        "distillation, an element-set encoder, decision offsets, vector scaling) on one "
        "grouped split beside LightGBM and print their scores; exports nothing.",
    )
    add_training_options(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    setup_logging()

    command_line = "python -m research.ablate " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    try:
        print(ablate(args, command_line=command_line))
    except (SnapshotError, StrategyUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
