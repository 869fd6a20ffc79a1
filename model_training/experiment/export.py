"""Exporting the experiment head into ``<model dir>/experiment/``, beside the MP head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.model_card import EXPERIMENT_DIRNAME, EXPERIMENT_OUTPUT_COLUMNS, ExperimentMetadata
from model_training.data import LabelledData
from model_training.experiment.network import TrainedExperimentNetwork, served_experiment_model
from model_training.export import card_fields, export_model, members_training_config

OUTPUT_NAME = "experiment"

SOURCES: tuple[str, ...] = (
    "NEMAD: S. Itani et al., 'Northeast Materials Database (NEMAD)', arXiv 2409.15675 "
    "(republished by sachincscn/MagMat-Discovery)",
    "J. Nelson and S. Sanvito, Phys. Rev. Materials 3, 104405 (2019) "
    "(via msg-byu/ML-for-CurieTemp-Predictions, MIT)",
    "Taufour group ferromagnets (via msg-byu/ML-for-CurieTemp-Predictions, MIT)",
    "BERT-PSIE: L. P. J. Gilligan et al., 'A rule-free workflow for the automated generation "
    "of databases from scientific literature', npj Comput. Mater. (2023) "
    "(StefanoSanvitoGroup/BERT-PSIE-TC, MIT)",
)
"""The literature databases the experimental snapshot is compiled from, to cite."""


def export_experiment_head(
    network: TrainedExperimentNetwork,
    *,
    temperature: float,
    margin: float,
    train: LabelledData,
    model_dir: Path,
    model_version: str,
    description: str,
    metrics: dict[str, Any],
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Export a trained experiment network as ``<model_dir>/experiment/``.

    Args:
        network: The trained network.
        temperature: Calibration temperature of its ordering logits.
        margin: How far its temperature interval is moved apart, in ln T
            (`interval_margin`).
        train: The records it was trained on (their elements go into the card).
        model_dir: The model directory the head belongs to; its ``experiment/`` is replaced.
        model_version: Version of this head.
        description: One paragraph for the card.
        metrics: Evaluation figures.
        extra_config: More configuration to record (the command, the split).

    Returns:
        The head's directory.
    """
    metadata = ExperimentMetadata(
        output_columns=EXPERIMENT_OUTPUT_COLUMNS,
        temperature_quantiles=network.config.quantiles,
        sources=SOURCES,
        **card_fields(
            train=train,
            model_version=model_version,
            description=description,
            metrics=metrics,
            training_config=members_training_config(
                network, {"temperature": temperature, "interval_margin": margin}, extra_config
            ),
        ),
    )
    return export_model(
        served_experiment_model(network, temperature, margin),
        metadata,
        model_dir / EXPERIMENT_DIRNAME,
        output_name=OUTPUT_NAME,
    )
