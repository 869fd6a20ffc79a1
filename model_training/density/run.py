"""The density estimator's command, ``density``, stage by stage."""

from __future__ import annotations

import argparse

from model_training import pipeline
from model_training.density.card import write_density_card
from model_training.density.evaluate import run_density_evaluation
from model_training.density.export import export_density_estimator
from model_training.density.network import DensityConfig
from model_training.mp.data import load_labelled_data


def density(args: argparse.Namespace, *, command_line: str) -> str:
    """Train and score the density estimator, write its card and export it beside the MP head.

    Args:
        args: Parsed ``density`` arguments.
        command_line: The command as typed, recorded in the card.

    Returns:
        A summary of every model's figures, as printed.
    """
    data, split = pipeline.data_and_split(args, load_labelled_data)
    predictor = pipeline.load_mp_head(args.model_dir, without="to measure the estimate's effect on")
    config = pipeline.with_overrides(DensityConfig(seed=args.seed), args)
    evaluation = run_density_evaluation(
        data,
        split,
        config=config,
        strategy=pipeline.strategy_of(args),
        predictor=predictor,
        verbose=pipeline.verbosity(args),
        on_stage=pipeline.log_stage,
    )
    head_dir, card = pipeline.export_with_card(
        lambda: export_density_estimator(
            evaluation,
            train=data.subset(split.train),
            model_dir=args.model_dir,
            model_version=args.version,
            extra_config={"command": command_line},
        ),
        lambda head_dir: write_density_card(
            evaluation, head_dir, model_version=args.version, command=command_line
        ),
    )
    lines = [
        f"{'model':<10} {'MAE':>7} {'RMSE':>7} {'R2':>6}  (g/cm3, {len(split.test)} test rows)"
    ]
    for result in evaluation.results:
        s = result.scores
        lines.append(f"{result.name:<10} {s.mae:>7.3f} {s.rmse:>7.3f} {s.r2:>6.3f}")
    if evaluation.mp_head is not None:
        head = evaluation.mp_head
        lines.append(
            f"MP head macro-F1 {head['macro_f1_given']:.4f} with the real density, "
            f"{head['macro_f1_estimated']:.4f} with the estimate "
            f"({head['answers_changed']:.1%} of answers change)"
        )
    lines.append(f"card: {card}; exported to {head_dir}")
    return "\n".join(lines)
