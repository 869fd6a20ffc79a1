"""Exporting a trained Keras model as the SavedModel + model card the service loads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from app.core.features import N_FEATURES
from app.core.model_card import SAVED_MODEL_DIRNAME, ModelMetadata, hash_directory, write_metadata

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


def export_model(model: keras.Model, metadata: ModelMetadata, model_dir: Path) -> Path:
    """Write ``saved_model/`` and ``metadata.json`` into a model directory.

    The directory is written beside its destination and moved into place at the end, so a
    failed export never leaves a half-written model where the service looks for one.

    Args:
        model: A model mapping ``(n, 119)`` features to class probabilities.
        metadata: Its model card; the export fills in ``saved_model_sha256``.
        model_dir: Destination; replaced if it exists.

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
            fn=lambda features: {OUTPUT_NAME: model(features, training=False)},
            input_signature=[tf.TensorSpec([None, N_FEATURES], tf.float32, name=INPUT_NAME)],
        )
        archive.write_out(str(staging / SAVED_MODEL_DIRNAME), verbose=False)
        checksum = hash_directory(staging / SAVED_MODEL_DIRNAME)
        write_metadata(metadata.model_copy(update={"saved_model_sha256": checksum}), staging)
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model_dir
