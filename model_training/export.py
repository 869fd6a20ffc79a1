"""Exporting a head: the SavedModel, its LiteRT compile and its metadata, sealed.

Every head exports through `export_model`; `card_fields` and `members_training_config`
fill in what every head's metadata says alike.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from app.core.features import (
    DENSITY_INDEX,
    FEATURE_LAYOUT_VERSION,
    N_ELEMENTS,
    N_FEATURES,
    element_symbols,
)
from app.core.model_card import (
    HEAD_DIRNAMES,
    SAVED_MODEL_DIRNAME,
    DensityMetadata,
    ExperimentMetadata,
    ModelMetadata,
    hash_directory,
    write_metadata,
)
from app.core.model_runtime import LITERT_FILENAME, compile_to_litert
from model_training.data import LabelledData
from model_training.members import FittedMembers

logger = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


def export_model(
    model: keras.Model,
    metadata: ModelMetadata | ExperimentMetadata | DensityMetadata,
    model_dir: Path,
    *,
    output_name: str = OUTPUT_NAME,
) -> Path:
    """Write ``saved_model/`` and ``metadata.json`` into a model directory, sealed.

    `write_metadata` seals the directory with its manifest (``SHA256SUMS``,
    `app.core.model_manifest`), which the service checks at load; whatever writes into the
    directory afterwards (the Markdown card and its plots) seals it again.

    The directory is written beside its destination and moved into place at the end, so a
    failed export never leaves a half-written model where the service looks for one. Heads
    already in the destination (``experiment/``, ``density/``) are kept: each is trained by
    its own command.

    Args:
        model: A model mapping ``(n, 119)`` features to its output matrix.
        metadata: Its model card; the export fills in ``saved_model_sha256``.
        model_dir: Destination; replaced if it exists.
        output_name: Name of the serving signature's output.

    Returns:
        ``model_dir``.
    """
    model_dir = model_dir.resolve()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = model_dir.with_name(f".{model_dir.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # left by an export that was killed
    staging.mkdir()
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            name="serve",  # also written as the default serving signature
            fn=lambda features: {output_name: model(features, training=False)},
            input_signature=[tf.TensorSpec([None, N_FEATURES], tf.float32, name=INPUT_NAME)],
        )
        archive.write_out(str(staging / SAVED_MODEL_DIRNAME), verbose=False)
        _write_litert(staging / SAVED_MODEL_DIRNAME)
        checksum = hash_directory(staging / SAVED_MODEL_DIRNAME)
        write_metadata(metadata.model_copy(update={"saved_model_sha256": checksum}), staging)
        for name in HEAD_DIRNAMES:
            head = model_dir / name
            if head.is_dir():
                head.rename(staging / name)
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model_dir


def _write_litert(saved_model_dir: Path) -> None:
    """Write the LiteRT compile the service runs beside the SavedModel, when it compiles.

    The service would otherwise convert at every start-up (seconds for the MP head); it still
    checks this compile against the SavedModel before using it.
    """
    try:
        flatbuffer = compile_to_litert(saved_model_dir)
    except RuntimeError as exc:
        logger.warning("no LiteRT compile exported; the service will run TensorFlow: %s", exc)
        return
    (saved_model_dir / LITERT_FILENAME).write_bytes(flatbuffer)


def elements_and_density_range(
    features: npt.NDArray[np.float32],
) -> tuple[tuple[str, ...], tuple[float, float]]:
    """Return the elements present in training rows and their density range.

    Args:
        features: ``(n, 119)`` raw feature matrix of the training rows.

    Returns:
        Element symbols in feature order, and the smallest and largest density in g/cm³.
    """
    present = np.flatnonzero(features[:, :N_ELEMENTS].max(axis=0) > 0)
    symbols = element_symbols()
    density = features[:, DENSITY_INDEX]
    return tuple(symbols[i] for i in present), (float(density.min()), float(density.max()))


def card_fields(
    *,
    train: LabelledData,
    model_version: str,
    description: str,
    metrics: dict[str, Any],
    training_config: dict[str, Any],
) -> dict[str, Any]:
    """The fields every head's metadata has, from the rows it was trained on and its run.

    Args:
        train: The rows it was trained on: its elements and data card go into the metadata.
        model_version: Version of the head.
        description: One paragraph for the card.
        metrics: Evaluation figures.
        training_config: How it was fitted.

    Returns:
        Keyword arguments of `ModelMetadata`, `ExperimentMetadata` and `DensityMetadata`.
    """
    elements, _ = elements_and_density_range(train.features)
    return {
        "model_version": model_version,
        "description": description,
        "created_at": datetime.now(UTC),
        "feature_layout_version": FEATURE_LAYOUT_VERSION,
        "n_features": N_FEATURES,
        "elements_seen": elements,
        "metrics": metrics,
        "training_config": training_config,
        "data_snapshot_sha256": train.report.sha256,
        "data_card": train.report.to_dict(),
        "tensorflow_version": tf.__version__,
    }


def members_training_config(
    network: FittedMembers,
    particular: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """How an ensemble fitted with `model_training.members` was fitted, for its card.

    Args:
        network: The fitted network.
        particular: The head's own entries, written after its configuration.
        extra_config: More configuration to record (the command, the split), written last.

    Returns:
        The card's training configuration.
    """
    return {
        "network": network.config.to_dict(),
        **(particular or {}),
        "best_epochs": network.best_epochs,
        "epochs_run": network.epochs_run,
        "fit_seconds": round(network.seconds, 1),
        "strategy": network.strategy,
        **(extra_config or {}),
    }
