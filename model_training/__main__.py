"""Command line of the trainer: ``python -m model_training --help``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app.config import DEFAULT_MODEL_DIR


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_training",
        description="Train and export magorder models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    placeholder = commands.add_parser(
        "placeholder",
        help="export an UNTRAINED placeholder model (random weights) for the service to start on",
    )
    placeholder.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help=f"model directory to write (default: {DEFAULT_MODEL_DIR})",
    )
    placeholder.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The process exit code.
    """
    args = _build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from model_training.placeholder import export_placeholder  # imports TensorFlow: only here

    model_dir = export_placeholder(args.output, seed=args.seed)
    print(f"exported untrained placeholder model to {model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
