"""What every head's run does alike: load and split, fit under a strategy, export, write files.

Each head's command (``model_training.<head>.run``) is the same pipeline, data → split →
fit → evaluate → card → export: it loads its snapshot and splits it here
(`data_and_split`), fits and scores its models beside their baselines in its own
``evaluate``, exports with `export_with_card` (the SavedModel and metadata, then the card
and its plots, sealed) and writes its run files with `write_run_metrics`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from app.core.errors import ModelLoadError
from app.core.predictor import Predictor
from model_training.data import LabelledData
from model_training.split import Split, SplitKind, load_split, save_split, split_data
from model_training.strategy import StrategyChoice, choose_strategy

logger = logging.getLogger(__name__)

SPLIT_FILENAME = "split.csv"
METRICS_FILENAME = "metrics.json"

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Config = TypeVar("_Config", bound="DataclassInstance")


def strategy_of(args: argparse.Namespace) -> Any:
    """The ``tf.distribute`` strategy asked for with ``--strategy``."""
    return choose_strategy(StrategyChoice(args.strategy))


def verbosity(args: argparse.Namespace) -> int:
    """Keras progress output: none with ``--quiet``, one line per epoch without."""
    return 0 if args.quiet else 2


def log_stage(stage: str) -> None:
    """Log the start of a stage of a head's evaluation."""
    logger.info("== %s", stage)


def with_overrides(config: _Config, args: argparse.Namespace) -> _Config:
    """A head's configuration with the epochs, batch size and ensemble size asked for."""
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "ensemble_size": args.ensemble_size,
    }
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def data_and_split(
    args: argparse.Namespace,
    load: Callable[[Path], LabelledData],
    *,
    loading: str = "loading and cleaning",
) -> tuple[LabelledData, Split]:
    """Load ``--data`` with a head's loader and split it, or reuse ``--split``; save the split.

    Args:
        args: Parsed arguments (``data``, ``split``, ``seed``, ``run_dir``).
        load: The head's loader.
        loading: What loading does, for the log.

    Returns:
        The clean data and its split grouped by reduced formula.
    """
    logger.info("%s %s", loading, args.data)
    data = load(args.data)
    if args.split is not None:
        split = load_split(args.split, data)
        logger.info("reusing the split in %s", args.split)
    else:
        logger.info("splitting %d rows by reduced formula (seed %d)", len(data.labels), args.seed)
        split = split_data(data, kind=SplitKind.GROUPED, seed=args.seed)
    path = save_split(split, data, args.run_dir / SPLIT_FILENAME)
    logger.info(
        "split: train %d, validation %d, test %d rows; saved to %s",
        len(split.train),
        len(split.validation),
        len(split.test),
        path,
    )
    return data, split


def load_mp_head(model_dir: Path, *, without: str) -> Predictor | None:
    """The Materials Project head in ``model_dir``, or None (logged) when there is none.

    Args:
        model_dir: The model directory.
        without: What is left out without it, for the warning.
    """
    try:
        return Predictor.load(model_dir)
    except ModelLoadError as exc:
        logger.warning("no Materials Project head %s: %s", without, exc)
        return None


def export_with_card(
    export: Callable[[], Path], write_card: Callable[[Path], Path]
) -> tuple[Path, Path]:
    """Export a head, then write its card and plots into its directory (which seals it).

    Args:
        export: Writes the SavedModel and metadata, sealed; returns the head's directory.
        write_card: Writes the head's card and plots into that directory and seals it again.

    Returns:
        The head's directory and its card.
    """
    head_dir = export()
    return head_dir, write_card(head_dir)


def write_run_metrics(run_dir: Path, figures: dict[str, Any], **dumps: Any) -> Path:
    """Write a run's full figures as ``metrics.json`` in its run directory.

    Args:
        run_dir: The run directory (made if missing).
        figures: The figures.
        **dumps: Keyword arguments of `json.dumps` (``default=str``).

    Returns:
        The file's path.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / METRICS_FILENAME
    path.write_text(json.dumps(figures, indent=2, **dumps) + "\n")
    return path
