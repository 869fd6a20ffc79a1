"""The untrained placeholder model that lets the service run before a trained model exists."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import tensorflow as tf

from app.core.features import FEATURE_LAYOUT_VERSION, N_FEATURES
from app.core.model_card import MagneticOrdering, ModelMetadata
from model_training.export import export_model
from model_training.mp.config import ModelConfig
from model_training.mp.network import build_model

PLACEHOLDER_VERSION = "0.0.0+untrained"


def export_placeholder(model_dir: Path, *, seed: int = 0) -> Path:
    """Export a randomly initialised model, marked untrained in its model card.

    Args:
        model_dir: Destination directory; replaced if it exists.
        seed: Seed of the random weights.

    Returns:
        ``model_dir``.
    """
    config = ModelConfig(seed=seed, tree_sets=0)  # random networks, no trees
    metadata = ModelMetadata(
        model_version=PLACEHOLDER_VERSION,
        trained=False,
        description=(
            "UNTRAINED placeholder with random weights, exported by "
            "`python -m model_training placeholder` so that the service runs before a model "
            "trained on Materials Project data is committed. Its probabilities carry no "
            "information."
        ),
        created_at=datetime.now(UTC),
        feature_layout_version=FEATURE_LAYOUT_VERSION,
        n_features=N_FEATURES,
        classes=tuple(MagneticOrdering),
        training_config={"model": config.to_dict()},
        tensorflow_version=tf.__version__,
    )
    return export_model(build_model(config), metadata, model_dir)
