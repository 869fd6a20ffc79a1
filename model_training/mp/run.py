"""The Materials Project head's commands, ``train`` and ``evaluate``, stage by stage."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from typing import Any

from model_training.metrics import score
from model_training.mp.card import metrics_summary, write_model_card
from model_training.mp.config import ModelConfig, Preset, TrainConfig
from model_training.mp.data import load_labelled_data
from model_training.mp.evaluate import calibrate, run_evaluation
from model_training.mp.export import export_head, head_training_config
from model_training.mp.served_head import fit_head
from model_training.pipeline import (
    data_and_split,
    export_with_card,
    log_stage,
    strategy_of,
    verbosity,
    write_run_metrics,
)

logger = logging.getLogger(__name__)

SEED_PRESET_EPOCHS = 20


def train_config_from(
    args: argparse.Namespace, preset: Preset, *, epochs: int | None = None
) -> TrainConfig:
    """The fitting of a preset, with the epochs and batch size asked for."""
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


def model_config_from(args: argparse.Namespace, preset: Preset) -> ModelConfig:
    """The architecture of a preset, with the ensemble size and tree sets asked for."""
    config = ModelConfig.for_preset(preset, seed=args.seed)
    if args.ensemble_size is not None:
        config = replace(config, ensemble_size=args.ensemble_size)
    if getattr(args, "tree_sets", None) is not None and preset is Preset.MAGORDER:
        config = replace(config, tree_sets=args.tree_sets)
    return config


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train the head (its networks, and for magorder its trees), export it with test figures.

    Args:
        args: Parsed ``train`` arguments.

    Returns:
        The headline figures, as printed.
    """
    data, split = data_and_split(args, load_labelled_data)
    strategy = strategy_of(args)
    preset = Preset(args.preset)
    train_rows, validation, test = split.parts(data)
    head = fit_head(
        train_rows,
        validation,
        model_config=model_config_from(args, preset),
        train_config=train_config_from(args, preset),
        strategy=strategy,
        verbose=verbosity(args),
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


def evaluate(args: argparse.Namespace, *, command_line: str) -> str:
    """Run the full comparison, write the model card and export the ``magorder`` network.

    Args:
        args: Parsed ``evaluate`` arguments.
        command_line: The command as typed, recorded in the model card.

    Returns:
        A summary table of every model, as printed.
    """
    data, split = data_and_split(args, load_labelled_data)
    strategy = strategy_of(args)
    train_config = train_config_from(args, Preset.MAGORDER)
    seed_config = (
        None
        if args.no_seed_preset
        else train_config_from(args, Preset.SEED, epochs=args.seed_epochs or SEED_PRESET_EPOCHS)
    )
    evaluation = run_evaluation(
        data,
        split,
        model_config=model_config_from(args, Preset.MAGORDER),
        train_config=train_config,
        seed_train_config=seed_config,
        strategy=strategy,
        with_random_split=not args.no_random_split,
        verbose=verbosity(args),
        on_stage=log_stage,
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
    _, card = export_with_card(
        lambda: export_head(
            head,
            confidence=evaluation.confidence.rule,
            train=data.subset(split.train),
            model_dir=args.model_dir,
            model_version=args.version,
            description=description,
            metrics=metrics,
            extra_config={"command": command_line, "seed_preset_training": seed_training},
        ),
        lambda _: write_model_card(
            evaluation,
            args.model_dir,
            model_version=args.version,
            command=command_line,
            training=training,
        ),
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
    write_run_metrics(args.run_dir, full)
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
