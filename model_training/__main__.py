"""Command line of the trainer: ``python -m model_training --help``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("model_training")

DEFAULT_RUN_DIR = Path("runs") / "latest"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Add the options every training command takes: data, run directory, split, fitting."""
    parser.add_argument("--data", type=Path, required=True, help="snapshot CSV to train on")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=DEFAULT_RUN_DIR,
        help=f"where the split (record ids) and full metrics go (default: {DEFAULT_RUN_DIR})",
    )
    parser.add_argument(
        "--split",
        type=Path,
        default=None,
        help="reuse a split.csv written by an earlier run instead of drawing a new one",
    )
    parser.add_argument(
        "--strategy",
        choices=["auto", "tpu", "gpu", "cpu"],
        default="auto",
        help="tf.distribute strategy: auto picks a TPU, then GPUs, then the CPU (default: auto)",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=None, help="most epochs (default: 60)"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=None, help="rows per step (default 256)"
    )
    parser.add_argument(
        "--ensemble-size",
        type=_positive_int,
        default=None,
        help="networks averaged in the exported model (default: 3 for magorder)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of split, weights and shuffle")
    parser.add_argument("--version", default="1.0.0", help="version of the exported model")
    parser.add_argument(
        "--quiet", action="store_true", help="no per-epoch Keras output, only stage lines"
    )


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _add_tree_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tree-sets",
        type=_non_negative_int,
        default=None,
        help="LightGBM boosters compiled into the served graph beside the networks "
        "(default: 3 for magorder; 0: networks only)",
    )


def _add_head_options(parser: argparse.ArgumentParser, relation: str) -> None:
    """Add the options of a head trained beside the Materials Project head in its directory.

    Args:
        parser: The head's command.
        relation: How the head relates to the MP head, for ``--model-dir``'s help.
    """
    add_training_options(parser)
    parser.set_defaults(run_dir=Path("runs") / parser.prog.split()[-1])
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("runs") / "model",
        help=f"model directory whose Materials Project head it is {relation} and exported "
        "beside (default: runs/model; the bundled model is artifacts/model)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_training",
        description="Fetch Materials Project data, train, evaluate and export magorder models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser(
        "fetch", help="download a snapshot from the Materials Project (needs MP_API_KEY)"
    )
    fetch.add_argument("--output", type=Path, required=True, help="snapshot CSV to write")

    train = commands.add_parser(
        "train",
        help="train the head (its networks, and for magorder the trees beside them), "
        "calibrate it and export it (no baselines)",
    )
    add_training_options(train)
    _add_tree_option(train)
    train.add_argument(
        "--preset", choices=["magorder", "seed"], default="magorder", help="architecture"
    )
    train.add_argument(
        "--output",
        type=Path,
        default=Path("runs") / "model",
        help="model directory to export to (default: runs/model)",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="train the baselines, the seed preset and magorder on one grouped split, score "
        "them all, write the model card and export magorder",
    )
    add_training_options(evaluate)
    _add_tree_option(evaluate)
    evaluate.add_argument(
        "--model-dir",
        type=Path,
        default=Path("runs") / "model",
        help="where to export magorder and its MODEL_CARD.md (default: runs/model; the "
        "bundled model is artifacts/model)",
    )
    evaluate.add_argument(
        "--seed-epochs",
        type=_positive_int,
        default=None,
        help="most epochs of the seed preset (default 20)",
    )
    evaluate.add_argument(
        "--no-seed-preset", action="store_true", help="leave the study's network out"
    )
    evaluate.add_argument(
        "--no-random-split", action="store_true", help="skip the random-row leakage check"
    )

    experiment = commands.add_parser(
        "experiment",
        help="train and score the experiment head (FM/AFM and ordering temperature, from "
        "reported Curie and Néel temperatures) beside its baselines, write its card and "
        "export it into <model-dir>/experiment",
    )
    _add_head_options(experiment, "compared with")
    experiment.add_argument(
        "--mp-data",
        type=Path,
        default=None,
        help="Materials Project snapshot, to estimate densities for comparing the MP head "
        "(the comparison is left out without it)",
    )

    density = commands.add_parser(
        "density",
        help="train and score the density estimator (a density from the composition, for "
        "formulas sent without one) beside its baselines on the Materials Project head's "
        "split, write its card and export it into <model-dir>/density",
    )
    _add_head_options(density, "measured with")

    placeholder = commands.add_parser(
        "placeholder",
        help="export an UNTRAINED placeholder model (random weights) for the service to start on",
    )
    placeholder.add_argument(
        "--output",
        type=Path,
        default=Path("runs") / "placeholder",
        help="model directory to write (default: runs/placeholder)",
    )
    placeholder.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    return parser


def setup_logging() -> None:
    """Log stage lines with their time to standard error."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The process exit code.
    """
    args = _build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    setup_logging()
    # The stages import TensorFlow, pandas and scikit-learn: only once a command needs them.
    from model_training.data import SnapshotError
    from model_training.fetch import FetchError
    from model_training.strategy import StrategyUnavailableError

    command_line = "python -m model_training " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    try:
        if args.command == "fetch":
            from model_training.fetch import fetch_snapshot, read_api_key

            result = fetch_snapshot(args.output, api_key=read_api_key())
            print(f"wrote {result.rows} materials to {result.snapshot} (card: {result.data_card})")
        elif args.command == "train":
            from model_training.mp.run import train

            print(json.dumps(train(args), indent=2))
        elif args.command == "evaluate":
            from model_training.mp.run import evaluate

            print(evaluate(args, command_line=command_line))
        elif args.command == "experiment":
            from model_training.experiment.run import experiment

            print(experiment(args, command_line=command_line))
        elif args.command == "density":
            from model_training.density.run import density

            print(density(args, command_line=command_line))
        else:
            from model_training.mp.placeholder import export_placeholder

            model_dir = export_placeholder(args.output, seed=args.seed)
            print(f"exported untrained placeholder model to {model_dir}")
    except (FetchError, SnapshotError, StrategyUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
