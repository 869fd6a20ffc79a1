"""Exporting the Materials Project head as the served model directory, with its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.model_card import ConfidenceRule, MagneticOrdering, ModelMetadata
from model_training.data import LabelledData
from model_training.export import card_fields, elements_and_density_range, export_model
from model_training.mp.fit import TrainedNetwork
from model_training.mp.network import with_probabilities_and_spread
from model_training.mp.served_head import ServedHead


def network_training_config(network: TrainedNetwork) -> dict[str, Any]:
    """How a network was fitted, for the card's training configuration."""
    return {
        "model": network.model_config.to_dict(),
        "training": network.train_config.to_dict(),
        "best_epochs": network.best_epochs,
        "epochs_run": network.epochs_run,
        "validation_macro_f1": network.validation_macro_f1,
        "fit_seconds": round(network.seconds, 1),
        "strategy": network.strategy,
    }


def head_training_config(head: ServedHead) -> dict[str, Any]:
    """How the served head was fitted: its networks, its trees, the share, the temperature."""
    return {
        **network_training_config(head.network),
        "trees": None if head.trees is None else head.trees.to_dict(),
        "network_share": head.network_share,
        "temperature": head.temperature,
    }


def export_head(
    head: ServedHead,
    *,
    train: LabelledData,
    model_dir: Path,
    model_version: str,
    description: str,
    metrics: dict[str, Any],
    extra_config: dict[str, Any] | None = None,
    confidence: ConfidenceRule | None = None,
) -> Path:
    """Export the served head as the served model directory.

    Args:
        head: The networks, the trees beside them, their share and the temperature.
        train: The rows it was trained on: its elements and density range go into the card,
            the service warns outside them.
        model_dir: Destination; replaced if it exists.
        model_version: Version of this model.
        description: One paragraph for the model card.
        metrics: Evaluation figures (``macro_f1`` first among them).
        extra_config: More configuration to record (split, strategy, timing).
        confidence: The unsure-answer rule: with it, the model outputs the members' spread as
            a fifth column (`with_probabilities_and_spread`); without, the four probabilities.

    Returns:
        ``model_dir``.
    """
    _, density_range = elements_and_density_range(train.features)
    metadata = ModelMetadata(
        trained=True,
        classes=tuple(MagneticOrdering),
        density_range=density_range,
        confidence=confidence,
        **card_fields(
            train=train,
            model_version=model_version,
            description=description,
            metrics=metrics,
            training_config={**head_training_config(head), **(extra_config or {})},
        ),
    )
    served = with_probabilities_and_spread(
        head.network.members,
        head.temperature,
        trees=None if head.trees is None else head.trees.model,
        network_share=head.network_share,
        with_spread=confidence is not None,
    )
    return export_model(served, metadata, model_dir)
