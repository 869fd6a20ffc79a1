"""Exporting the density estimator into ``<model dir>/density/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.model_card import DENSITY_DIRNAME, DENSITY_OUTPUT_COLUMNS, DensityMetadata
from model_training.data import LabelledData
from model_training.density.card import metrics_summary
from model_training.density.evaluate import DensityEvaluation
from model_training.export import card_fields, export_model, members_training_config

OUTPUT_NAME = "density"


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
    metadata = DensityMetadata(
        output_columns=DENSITY_OUTPUT_COLUMNS,
        test_mae=evaluation.result("magorder").scores.mae,
        **card_fields(
            train=train,
            model_version=model_version,
            description=(
                "magorder density estimator: density-free derived composition features "
                "computed in the graph (standardised, clipped) beside a learnt element "
                "embedding averaged by atomic fraction, then the mean of "
                f"{network.config.ensemble_size} MLPs fitted for the mean absolute error of "
                "Materials Project densities. Figures are on a test split grouped by reduced "
                "formula; see density/MODEL_CARD.md."
            ),
            metrics=metrics_summary(evaluation),
            training_config=members_training_config(network, extra_config=extra_config),
        ),
    )
    return export_model(
        network.model, metadata, model_dir / DENSITY_DIRNAME, output_name=OUTPUT_NAME
    )
