"""Exporting the density estimator into ``<model dir>/density/``, with its card."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tensorflow as tf

from app.core.features import FEATURE_LAYOUT_VERSION, N_FEATURES
from app.core.model_card import (
    DENSITY_DIRNAME,
    DENSITY_OUTPUT_COLUMNS,
    MODEL_CARD_FILENAME,
    DensityMetadata,
)
from app.core.model_manifest import write_manifest
from model_training.data import LabelledData
from model_training.density.evaluate import DensityEvaluation
from model_training.export import elements_and_density_range, export_model
from model_training.metrics import RegressionScores

OUTPUT_NAME = "density"


def metrics_summary(evaluation: DensityEvaluation) -> dict[str, Any]:
    """The figures written into the estimator's ``metadata.json`` (and shown at ``/model``)."""
    return {
        "split": "grouped by reduced formula, the Materials Project head's seed; test "
        "compositions never seen in training",
        "test_rows": evaluation.result("magorder").scores.n,
        "unit": "g/cm3",
        **{result.name: result.scores.to_dict() for result in evaluation.results},
        "relative_error_median": evaluation.relative_error_median,
        "by_number_of_elements": {k: v.to_dict() for k, v in evaluation.by_elements.items()},
        "mp_head_with_estimated_density": evaluation.mp_head,
    }


def _row(name: str, description: str, scores: RegressionScores) -> str:
    return (
        f"| {name} | {scores.n} | {scores.mae:.3f} | {scores.rmse:.3f} | {scores.r2:.3f} | "
        f"{scores.median_absolute_error:.3f} | {description} |"
    )


def write_density_card(
    evaluation: DensityEvaluation, head_dir: Path, *, model_version: str, command: str
) -> Path:
    """Write ``density/MODEL_CARD.md``: every model's scores, the effect on the MP head, errors.

    Args:
        evaluation: The run's figures.
        head_dir: The estimator's directory.
        model_version: Its version.
        command: The command that made it.

    Returns:
        The card's path.
    """
    ours = evaluation.result("magorder").scores
    sizes = evaluation.split_sizes
    lines = [
        f"# magorder density estimator — {model_version}",
        "",
        "Estimates a compound's density (g/cm³) from its composition alone, for formulas sent "
        "without one: the service then predicts with the estimate, says so in "
        '`density_source: "estimated"` and warns. It reads the 119-vector but never its '
        "density slot. Trained on the Materials Project snapshot's densities (DFT-relaxed "
        "structures, so a little below measured densities for most compounds), on the rows "
        "of the Materials Project head's own split. Every figure below was measured in one "
        f"run of `{command}`, on {sizes['test']} test rows whose reduced formulas, and every "
        f"polymorph of them, were never seen in training ({sizes['train']} training and "
        f"{sizes['validation']} validation rows).",
        "",
        "## Every model on the same test rows (g/cm³)",
        "",
        "| model | rows | MAE | RMSE | R² | median abs. error | what it is |",
        "|---|---|---|---|---|---|---|",
        *(_row(r.name, r.description, r.scores) for r in evaluation.results),
        "",
        f"Median relative error of ours: {evaluation.relative_error_median:.1%}. "
        "A formula's polymorphs have different densities (diamond 3.5, graphite 2.3 g/cm³); "
        "a composition-only estimate gives one value for them all, so part of its error "
        "cannot be removed without a structure.",
        "",
        "### By number of elements",
        "",
        "| elements | rows | MAE | R² |",
        "|---|---|---|---|",
        *(f"| {k} | {v.n} | {v.mae:.3f} | {v.r2:.3f} |" for k, v in evaluation.by_elements.items()),
        "",
    ]
    head = evaluation.mp_head
    if head is not None:
        lines += [
            "## The Materials Project head with an estimated density",
            "",
            f"The same {head['rows']} test rows through the Materials Project head "
            f"{head['model_version']}, once with their real density and once with this "
            "estimate:",
            "",
            "| density | macro-F1 | accuracy |",
            "|---|---|---|",
            f"| given | {head['macro_f1_given']:.4f} | {head['accuracy_given']:.4f} |",
            f"| estimated | {head['macro_f1_estimated']:.4f} | {head['accuracy_estimated']:.4f} |",
            "",
            f"{head['answers_changed']:.1%} of the answers change. Give the density when it "
            "is known; the estimate costs little on average, but it cannot tell polymorphs "
            "apart.",
            "",
        ]
    lines += [
        "## Well-known compounds",
        "",
        "| formula | density | estimate |",
        "|---|---|---|",
        *(f"| {w['formula']} | {w['density']} | {w['estimate']} |" for w in evaluation.well_known),
        "",
        "## Largest test errors",
        "",
        "| material | formula | density | estimate |",
        "|---|---|---|---|",
        *(
            f"| `{w['material_id']}` | {w['formula']} | {w['density']} | {w['estimate']} |"
            for w in evaluation.worst
        ),
        "",
        f"MAE on the test rows, {ours.mae:.3f} g/cm³, is what the service quotes in its "
        "warning when it estimates a density.",
        "",
    ]
    path = head_dir / MODEL_CARD_FILENAME
    path.write_text("\n".join(lines), encoding="utf-8")
    # The service serves the card, so it is sealed with the estimator.
    write_manifest(head_dir)
    return path


def export_density_estimator(
    evaluation: DensityEvaluation,
    *,
    train: LabelledData,
    model_dir: Path,
    model_version: str,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Export the trained density network as ``<model_dir>/density/``.

    Args:
        evaluation: The run that trained and scored it.
        train: The rows it was trained on (their elements go into the card).
        model_dir: The model directory it belongs to; its ``density/`` is replaced.
        model_version: Version of this estimator.
        extra_config: More configuration to record (the command).

    Returns:
        The estimator's directory.
    """
    network = evaluation.network
    elements, _ = elements_and_density_range(train.features)
    metadata = DensityMetadata(
        model_version=model_version,
        description=(
            "magorder density estimator: density-free derived composition features computed "
            "in the graph (standardised, clipped) beside a learnt element embedding averaged "
            f"by atomic fraction, then the mean of {network.config.ensemble_size} MLPs fitted "
            "for the mean absolute error of Materials Project densities. Figures are on a "
            "test split grouped by reduced formula; see density/MODEL_CARD.md."
        ),
        created_at=datetime.now(UTC),
        feature_layout_version=FEATURE_LAYOUT_VERSION,
        n_features=N_FEATURES,
        output_columns=DENSITY_OUTPUT_COLUMNS,
        test_mae=evaluation.result("magorder").scores.mae,
        elements_seen=elements,
        metrics=metrics_summary(evaluation),
        training_config={
            "network": network.config.to_dict(),
            "best_epochs": network.best_epochs,
            "epochs_run": network.epochs_run,
            "fit_seconds": round(network.seconds, 1),
            "strategy": network.strategy,
            **(extra_config or {}),
        },
        data_snapshot_sha256=train.report.sha256,
        data_card=train.report.to_dict(),
        tensorflow_version=tf.__version__,
    )
    return export_model(
        network.model, metadata, model_dir / DENSITY_DIRNAME, output_name=OUTPUT_NAME
    )
