"""What each trainer command does, stage by stage; the CLI only parses arguments."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from app.core.errors import ModelLoadError
from app.core.predictor import Predictor
from model_training.ablation import ablation_table, run_ablation
from model_training.config import ModelConfig, Preset, TrainConfig
from model_training.data import LabelledData, load_labelled_data
from model_training.density.evaluate import run_density_evaluation
from model_training.density.export import export_density_estimator, write_density_card
from model_training.density.network import DensityConfig
from model_training.evaluate import calibrate, run_evaluation
from model_training.experiment.data import load_experimental_data
from model_training.experiment.evaluate import run_experiment_evaluation
from model_training.experiment.export import export_experiment_head
from model_training.experiment.network import ExperimentConfig
from model_training.experiment.report import metrics_summary as experiment_metrics
from model_training.experiment.report import write_experiment_card
from model_training.export import export_head, head_training_config
from model_training.fetch import FetchResult, fetch_snapshot, read_api_key
from model_training.metrics import score
from model_training.report import metrics_summary, write_model_card
from model_training.served_head import fit_head
from model_training.split import Split, SplitKind, load_split, save_split, split_data
from model_training.strategy import StrategyChoice, choose_strategy

logger = logging.getLogger(__name__)

SPLIT_FILENAME = "split.csv"
METRICS_FILENAME = "metrics.json"
ABLATION_FILENAME = "ablation.md"
SEED_PRESET_EPOCHS = 20


def fetch(output: Path) -> FetchResult:
    """Download a snapshot from the Materials Project with the key in ``MP_API_KEY``."""
    return fetch_snapshot(output, api_key=read_api_key())


def _train_config(
    args: argparse.Namespace, preset: Preset, *, epochs: int | None = None
) -> TrainConfig:
    config = TrainConfig()
    if preset is Preset.SEED:
        # The study trained on labels alone; its deep stack needs a gentler rate.
        config = replace(config, distillation=0.0, learning_rate=1e-3, patience=8)
    epochs = epochs or args.epochs
    if epochs is not None:
        config = replace(config, epochs=epochs)
    if args.batch_size is not None:
        config = replace(config, batch_size=args.batch_size)
    return config


def _model_config(args: argparse.Namespace, preset: Preset) -> ModelConfig:
    config = ModelConfig.for_preset(preset, seed=args.seed)
    if args.ensemble_size is not None:
        config = replace(config, ensemble_size=args.ensemble_size)
    if getattr(args, "tree_sets", None) is not None and preset is Preset.MAGORDER:
        config = replace(config, tree_sets=args.tree_sets)
    return config


_HeadConfig = TypeVar("_HeadConfig", ExperimentConfig, DensityConfig)


def _with_overrides(config: _HeadConfig, args: argparse.Namespace) -> _HeadConfig:
    """A head's configuration with the epochs, batch size and ensemble size asked for."""
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "ensemble_size": args.ensemble_size,
    }
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _data_and_split(args: argparse.Namespace) -> tuple[LabelledData, Split]:
    logger.info("loading and cleaning %s", args.data)
    data = load_labelled_data(args.data)
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


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train the head (its networks, and for magorder its trees), export it with test figures.

    Args:
        args: Parsed ``train`` arguments.

    Returns:
        The headline figures, as printed.
    """
    data, split = _data_and_split(args)
    strategy = choose_strategy(StrategyChoice(args.strategy))
    preset = Preset(args.preset)
    train_rows, validation, test = split.parts(data)
    head = fit_head(
        train_rows,
        validation,
        model_config=_model_config(args, preset),
        train_config=_train_config(args, preset),
        strategy=strategy,
        verbose=0 if args.quiet else 2,
    )
    calibration = calibrate(head, test)
    scores = score(test.labels, calibration.probabilities.argmax(axis=1))
    metrics = {
        "split": "grouped by reduced formula",
        "test_rows": scores.n,
        "macro_f1": scores.macro_f1,
        "accuracy": scores.accuracy,
        "balanced_accuracy": scores.balanced_accuracy,
        "per_class": {name: s.f1 for name, s in scores.per_class.items()},
        "ece_after_scaling": calibration.ece_after,
    }
    export_head(
        head,
        train=train_rows,
        model_dir=args.output,
        model_version=args.version,
        description=f"{preset} head: {head.describe()}; trained by `python -m model_training "
        "train` (no baselines in this run; see `evaluate` for the full comparison).",
        metrics=metrics,
    )
    logger.info("exported %s to %s", preset, args.output)
    return {
        **metrics,
        "temperature": head.temperature,
        "network_share": head.network_share,
        "fit_seconds": round(head.network.seconds, 1),
        "strategy": head.network.strategy,
        "model_dir": str(args.output),
    }


def ablate(args: argparse.Namespace, *, command_line: str) -> str:
    """Fit and score the variants of the recipe on one grouped split (nothing is exported).

    Args:
        args: Parsed ``ablate`` arguments.
        command_line: The command as typed, written at the top of the saved table.

    Returns:
        The Markdown table of every variant, as printed and saved in the run directory.
    """
    data, split = _data_and_split(args)
    results = run_ablation(
        data,
        split,
        model_config=_model_config(args, Preset.MAGORDER),
        train_config=_train_config(args, Preset.MAGORDER),
        strategy=choose_strategy(StrategyChoice(args.strategy)),
        verbose=0 if args.quiet else 2,
        on_stage=lambda stage: logger.info("== %s", stage),
    )
    table = ablation_table(results)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / ABLATION_FILENAME).write_text(f"`{command_line}`\n\n{table}\n")
    return f"{table}\n\nsaved to {args.run_dir / ABLATION_FILENAME}"


def experiment(args: argparse.Namespace, *, command_line: str) -> str:
    """Train and score the experiment head, write its card and export it beside the MP head.

    Args:
        args: Parsed ``experiment`` arguments.
        command_line: The command as typed, recorded in the card.

    Returns:
        A summary of every model's figures, as printed.
    """
    logger.info("loading, cleaning and merging %s", args.data)
    data = load_experimental_data(args.data)
    if args.split is not None:
        split = load_split(args.split, data)
    else:
        split = split_data(data, kind=SplitKind.GROUPED, seed=args.seed)
    save_split(split, data, args.run_dir / SPLIT_FILENAME)
    mp_predictor = mp_data = None
    try:
        mp_predictor = Predictor.load(args.model_dir)
    except ModelLoadError as exc:
        logger.warning("no Materials Project head to compare with: %s", exc)
    if mp_predictor is not None and args.mp_data is not None:
        logger.info("loading %s for the density estimate", args.mp_data)
        mp_data = load_labelled_data(args.mp_data)
    config = _with_overrides(ExperimentConfig(seed=args.seed), args)
    evaluation = run_experiment_evaluation(
        data,
        split,
        config=config,
        strategy=choose_strategy(StrategyChoice(args.strategy)),
        mp_predictor=mp_predictor,
        mp_data=mp_data,
        verbose=0 if args.quiet else 2,
        on_stage=lambda stage: logger.info("== %s", stage),
    )
    metrics = experiment_metrics(evaluation)
    head_dir = export_experiment_head(
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
    )
    card = write_experiment_card(
        evaluation, head_dir, model_version=args.version, command=command_line
    )
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / METRICS_FILENAME).write_text(
        json.dumps(
            {
                "metrics": metrics,
                "failures": evaluation.failures,
                "well_known": evaluation.well_known,
            },
            indent=2,
            default=str,
        )
        + "\n"
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


def density(args: argparse.Namespace, *, command_line: str) -> str:
    """Train and score the density estimator, write its card and export it beside the MP head.

    Args:
        args: Parsed ``density`` arguments.
        command_line: The command as typed, recorded in the card.

    Returns:
        A summary of every model's figures, as printed.
    """
    data, split = _data_and_split(args)
    predictor = None
    try:
        predictor = Predictor.load(args.model_dir)
    except ModelLoadError as exc:
        logger.warning("no Materials Project head to measure the estimate's effect on: %s", exc)
    config = _with_overrides(DensityConfig(seed=args.seed), args)
    evaluation = run_density_evaluation(
        data,
        split,
        config=config,
        strategy=choose_strategy(StrategyChoice(args.strategy)),
        predictor=predictor,
        verbose=0 if args.quiet else 2,
        on_stage=lambda stage: logger.info("== %s", stage),
    )
    head_dir = export_density_estimator(
        evaluation,
        train=data.subset(split.train),
        model_dir=args.model_dir,
        model_version=args.version,
        extra_config={"command": command_line},
    )
    card = write_density_card(
        evaluation, head_dir, model_version=args.version, command=command_line
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


def evaluate(args: argparse.Namespace, *, command_line: str) -> str:
    """Run the full comparison, write the model card and export the ``magorder`` network.

    Args:
        args: Parsed ``evaluate`` arguments.
        command_line: The command as typed, recorded in the model card.

    Returns:
        A summary table of every model, as printed.
    """
    data, split = _data_and_split(args)
    strategy = choose_strategy(StrategyChoice(args.strategy))
    train_config = _train_config(args, Preset.MAGORDER)
    seed_config = (
        None
        if args.no_seed_preset
        else _train_config(args, Preset.SEED, epochs=args.seed_epochs or SEED_PRESET_EPOCHS)
    )
    evaluation = run_evaluation(
        data,
        split,
        model_config=_model_config(args, Preset.MAGORDER),
        train_config=train_config,
        seed_train_config=seed_config,
        strategy=strategy,
        with_random_split=not args.no_random_split,
        verbose=0 if args.quiet else 2,
        on_stage=lambda stage: logger.info("== %s", stage),
    )
    metrics = metrics_summary(evaluation)
    head = evaluation.head
    seed_training = None if seed_config is None else seed_config.to_dict()
    training = {**head_training_config(head), "seed_preset_training": seed_training}
    description = (
        "magorder head: element fractions, fraction-weighted element properties, volume per "
        "atom and a charge-balance estimate of the transition metals' d-electron count, "
        "computed in the graph from the 119-vector, each standardised and as its rank among "
        f"the training rows; then the mean logits of {len(head.network.members)} MLPs "
        "trained with class weights on Materials Project labels mixed with a LightGBM "
        "teacher's out-of-fold probabilities, selected on validation macro-F1"
        + (
            ""
            if head.trees is None
            else f"; blended with {len(head.trees.seeds)} LightGBM boosters of depth "
            f"{head.trees.depth} ({head.trees.n_trees} trees) compiled into the same graph, "
            f"network share {head.network_share:g} chosen on validation"
        )
        + "; temperature-scaled. Figures are on a test split grouped by reduced formula; see "
        "MODEL_CARD.md."
    )
    export_head(
        head,
        confidence=evaluation.confidence.rule,
        train=data.subset(split.train),
        model_dir=args.model_dir,
        model_version=args.version,
        description=description,
        metrics=metrics,
        extra_config={"command": command_line, "seed_preset_training": seed_training},
    )
    card = write_model_card(
        evaluation,
        args.model_dir,
        model_version=args.version,
        command=command_line,
        training=training,
    )
    full = {
        "metrics": metrics,
        "results": {
            r.name: {
                "test": r.test.to_dict(),
                "mp_prior": r.mp_prior.to_dict(),
                "by_label_source": {k: v.to_dict() for k, v in r.by_label_source.items()},
                "without_rule_labels": r.without_rule_labels.to_dict(),
            }
            for r in evaluation.results
        },
        "error_summary": evaluation.error_summary,
        "well_known": evaluation.well_known,
        "data": evaluation.data.to_dict(),
        "split_sizes": evaluation.split_sizes,
        "training": training,
    }
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / METRICS_FILENAME).write_text(json.dumps(full, indent=2) + "\n")
    evaluation.errors.to_csv(args.run_dir / "misclassified_sample.csv", index=False)
    lines = [f"{'model':<10} {'macro-F1':>8} {'accuracy':>8}  per-class F1 (FM NM FiM AFM)"]
    for result in evaluation.results:
        test = result.test
        per_class = " ".join(f"{s.f1:.3f}" for s in test.per_class.values())
        lines.append(f"{result.name:<10} {test.macro_f1:8.4f} {test.accuracy:8.4f}  {per_class}")
    lines.append(
        f"temperature {evaluation.calibration.temperature:.3f}: ECE "
        f"{evaluation.calibration.ece_before:.4f} -> {evaluation.calibration.ece_after:.4f}"
    )
    lines.append(f"model card: {card}; exported to {args.model_dir}; run files in {args.run_dir}")
    return "\n".join(lines)
