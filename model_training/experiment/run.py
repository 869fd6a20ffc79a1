"""The experiment head's command, ``experiment``, stage by stage."""

from __future__ import annotations

import argparse
import logging

from model_training import pipeline
from model_training.experiment.card import metrics_summary, write_experiment_card
from model_training.experiment.data import load_experimental_data
from model_training.experiment.evaluate import run_experiment_evaluation
from model_training.experiment.export import export_experiment_head
from model_training.experiment.network import ExperimentConfig
from model_training.mp.data import load_labelled_data

logger = logging.getLogger(__name__)


def experiment(args: argparse.Namespace, *, command_line: str) -> str:
    """Train and score the experiment head, write its card and export it beside the MP head.

    Args:
        args: Parsed ``experiment`` arguments.
        command_line: The command as typed, recorded in the card.

    Returns:
        A summary of every model's figures, as printed.
    """
    data, split = pipeline.data_and_split(
        args, load_experimental_data, loading="loading, cleaning and merging"
    )
    mp_data = None
    mp_predictor = pipeline.load_mp_head(args.model_dir, without="to compare with")
    if mp_predictor is not None and args.mp_data is not None:
        logger.info("loading %s for the density estimate", args.mp_data)
        mp_data = load_labelled_data(args.mp_data)
    config = pipeline.with_overrides(ExperimentConfig(seed=args.seed), args)
    evaluation = run_experiment_evaluation(
        data,
        split,
        config=config,
        strategy=pipeline.strategy_of(args),
        mp_predictor=mp_predictor,
        mp_data=mp_data,
        verbose=pipeline.verbosity(args),
        on_stage=pipeline.log_stage,
    )
    metrics = metrics_summary(evaluation)
    head_dir, card = pipeline.export_with_card(
        lambda: export_experiment_head(
            evaluation.network,
            temperature=evaluation.temperature,
            margin=evaluation.interval_margin,
            train=data.subset(split.train),
            model_dir=args.model_dir,
            model_version=args.version,
            description=(
                "magorder experiment head: density-free derived composition features computed in "
                "the graph (standardised, clipped) beside a learnt element embedding averaged by "
                f"atomic fraction, then the mean of {config.ensemble_size} MLPs with two outputs, "
                "P(FM | magnetic) against AFM (temperature-scaled) and the 10/50/90 % quantiles "
                "of the ordering temperature, trained on reported Curie and Néel temperatures "
                "(NEMAD, Nelson & Sanvito, Taufour, BERT-PSIE) with LightGBM teachers. Figures "
                "are on a test split grouped by reduced formula; see experiment/MODEL_CARD.md."
            ),
            metrics=metrics,
            extra_config={"command": command_line},
        ),
        lambda head_dir: write_experiment_card(
            evaluation, head_dir, model_version=args.version, command=command_line
        ),
    )
    pipeline.write_run_metrics(
        args.run_dir,
        {
            "metrics": metrics,
            "failures": evaluation.failures,
            "well_known": evaluation.well_known,
        },
        default=str,
    )
    evaluation.predictions.to_csv(args.run_dir / "test_predictions.csv", index=False)
    lines = [f"{'model':<10} {'FM/AFM acc':>10} {'macro-F1':>8} {'T MAE (K)':>10} {'T R2':>6}"]
    for r in evaluation.results:
        acc = "-" if r.ordering is None else f"{r.ordering.accuracy:.4f}"
        f1 = "-" if r.ordering is None else f"{r.ordering.macro_f1:.4f}"
        mae = "-" if r.temperature is None else f"{r.temperature.mae:.1f}"
        r2 = "-" if r.temperature is None else f"{r.temperature.r2:.3f}"
        lines.append(f"{r.name:<10} {acc:>10} {f1:>8} {mae:>10} {r2:>6}")
    lines.append(
        f"80 % interval coverage {evaluation.interval_coverage:.3f}; card: {card}; "
        f"exported to {head_dir}; run files in {args.run_dir}"
    )
    return "\n".join(lines)
