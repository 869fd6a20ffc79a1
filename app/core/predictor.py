"""Loading an exported model and turning compounds into predictions."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from app.core.errors import ModelLoadError
from app.core.features import (
    FEATURE_LAYOUT_VERSION,
    N_FEATURES,
    FeatureMatrix,
    ParsedCompound,
    vectorize,
)
from app.core.model_card import (
    METADATA_FILENAME,
    SAVED_MODEL_DIRNAME,
    MagneticOrdering,
    ModelMetadata,
    hash_directory,
    read_metadata,
)

logger = logging.getLogger(__name__)

SIGNATURE_KEY = "serving_default"
_PROBABILITY_TOLERANCE = 1e-3

ProbabilityMatrix = npt.NDArray[np.float32]
ModelFn = Callable[[FeatureMatrix], ProbabilityMatrix]


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's answer for one compound.

    Attributes:
        compound: The compound that was predicted.
        ordering: The most probable ordering.
        probabilities: Probability of each ordering; they sum to 1.
        warnings: What a user should know before trusting the answer.
    """

    compound: ParsedCompound
    ordering: MagneticOrdering
    probabilities: dict[MagneticOrdering, float]
    warnings: tuple[str, ...]


def _read_checked_metadata(model_dir: Path) -> ModelMetadata:
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    try:
        metadata = read_metadata(model_dir)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{model_dir / METADATA_FILENAME} is missing") from exc
    except (OSError, ValueError, ValidationError) as exc:
        raise ModelLoadError(
            f"{model_dir / METADATA_FILENAME} is not a valid model card: {exc}"
        ) from exc
    if metadata.feature_layout_version != FEATURE_LAYOUT_VERSION:
        raise ModelLoadError(
            f"model was trained on feature layout {metadata.feature_layout_version!r}, "
            f"but this service builds {FEATURE_LAYOUT_VERSION!r}"
        )
    if metadata.n_features != N_FEATURES:
        raise ModelLoadError(
            f"model expects {metadata.n_features} features, this service builds {N_FEATURES}"
        )
    if sorted(metadata.classes) != sorted(MagneticOrdering):
        raise ModelLoadError(
            f"model classes {[str(c) for c in metadata.classes]} are not exactly "
            f"{[str(c) for c in MagneticOrdering]}"
        )
    return metadata


class _SignatureFunction:
    """Calls a SavedModel's serving signature directly, without a Keras wrapper."""

    def __init__(
        self,
        saved_model: Any,
        input_name: str,
        output_name: str,
        to_tensor: Callable[[FeatureMatrix], Any],
    ) -> None:
        # A signature does not own the SavedModel's variables: keep the loaded object alive too,
        # or calls fail once it is garbage collected.
        self._saved_model = saved_model
        self._signature = saved_model.signatures[SIGNATURE_KEY]
        self._input_name = input_name
        self._output_name = output_name
        self._to_tensor = to_tensor

    def __call__(self, features: FeatureMatrix) -> ProbabilityMatrix:
        tensor = self._to_tensor(np.asarray(features, dtype=np.float32))
        outputs = self._signature(**{self._input_name: tensor})
        return np.asarray(outputs[self._output_name].numpy(), dtype=np.float32)


def _verify_checksum(saved_model_dir: Path, metadata: ModelMetadata) -> None:
    if not saved_model_dir.is_dir():
        raise ModelLoadError(f"SavedModel directory {saved_model_dir} does not exist")
    if metadata.saved_model_sha256 is None:
        raise ModelLoadError("model card has no saved_model_sha256 to verify the model against")
    actual = hash_directory(saved_model_dir)
    if actual != metadata.saved_model_sha256:
        raise ModelLoadError(
            f"SavedModel at {saved_model_dir} does not match its model card: sha256 {actual}, "
            f"expected {metadata.saved_model_sha256} (modified or corrupted after export)"
        )


def _load_saved_model(saved_model_dir: Path, metadata: ModelMetadata) -> ModelFn:
    _verify_checksum(saved_model_dir, metadata)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # heavy: imported only when a model is loaded, never at import time

    try:
        loaded = tf.saved_model.load(str(saved_model_dir))
    except Exception as exc:  # TensorFlow raises many unrelated types for a corrupt model
        raise ModelLoadError(f"cannot load SavedModel at {saved_model_dir}: {exc}") from exc
    signature = loaded.signatures.get(SIGNATURE_KEY)
    if signature is None:
        raise ModelLoadError(f"SavedModel at {saved_model_dir} has no {SIGNATURE_KEY!r} signature")
    _, input_specs = signature.structured_input_signature
    output_specs = signature.structured_outputs
    if len(input_specs) != 1 or len(output_specs) != 1:
        raise ModelLoadError(
            f"signature {SIGNATURE_KEY!r} must have one input and one output, "
            f"has inputs {list(input_specs)} and outputs {list(output_specs)}"
        )
    ((input_name, input_spec),) = input_specs.items()
    ((output_name, output_spec),) = output_specs.items()
    if input_spec.dtype != tf.float32 or input_spec.shape.as_list() != [None, N_FEATURES]:
        raise ModelLoadError(
            f"model input must be float32 of shape [None, {N_FEATURES}], "
            f"is {input_spec.dtype.name} {input_spec.shape.as_list()}"
        )
    if output_spec.shape.as_list()[-1:] != [len(metadata.classes)]:
        raise ModelLoadError(
            f"model output must have {len(metadata.classes)} columns, "
            f"has shape {output_spec.shape.as_list()}"
        )

    return _SignatureFunction(loaded, input_name, output_name, tf.constant)


class Predictor:
    """A loaded model with its model card; thread-safe for concurrent predictions.

    Args:
        model_fn: Maps a ``(n, N_FEATURES)`` float32 matrix to ``(n, len(classes))``
            probabilities, columns in ``metadata.classes`` order.
        metadata: The model card of the model behind ``model_fn``.
    """

    def __init__(self, *, model_fn: ModelFn, metadata: ModelMetadata) -> None:
        self._model_fn = model_fn
        self._metadata = metadata
        self._elements_seen = frozenset(metadata.elements_seen)

    @classmethod
    def load(cls, model_dir: Path) -> Predictor:
        """Load and check an exported model directory.

        Args:
            model_dir: A directory holding ``metadata.json`` and ``saved_model/``, as written by
                `model_training.export.export_model`.

        Returns:
            A predictor that has answered one test call.

        Raises:
            ModelLoadError: The directory is missing, corrupt, or does not match this code's
                feature layout or classes.
        """
        metadata = _read_checked_metadata(model_dir)
        predictor = cls(
            model_fn=_load_saved_model(model_dir / SAVED_MODEL_DIRNAME, metadata),
            metadata=metadata,
        )
        predictor._check_outputs()
        return predictor

    @property
    def metadata(self) -> ModelMetadata:
        """The model card of the loaded model."""
        return self._metadata

    def _check_outputs(self) -> None:
        probe = np.zeros((2, N_FEATURES), dtype=np.float32)
        probe[:, 7] = 1.0  # one oxygen atom
        probe[:, -1] = 1.0
        try:
            probabilities = self.predict_proba(probe)
        except Exception as exc:
            raise ModelLoadError(f"model failed its test call: {exc}") from exc
        if probabilities.shape != (2, len(self._metadata.classes)):
            raise ModelLoadError(f"model returned shape {probabilities.shape} for 2 rows")
        sums = probabilities.sum(axis=1)
        if not np.all(np.isfinite(probabilities)) or not np.allclose(
            sums, 1.0, atol=_PROBABILITY_TOLERANCE
        ):
            raise ModelLoadError(f"model outputs are not probabilities (row sums {sums})")

    def predict_proba(self, features: FeatureMatrix) -> ProbabilityMatrix:
        """Run the model on a feature matrix.

        Args:
            features: A float32 array of shape ``(n, N_FEATURES)``.

        Returns:
            A float32 array of shape ``(n, len(classes))``; columns follow ``metadata.classes``.
        """
        return self._model_fn(features)

    def predict(self, compounds: Sequence[ParsedCompound]) -> list[Prediction]:
        """Predict the magnetic ordering of validated compounds in one model call.

        Args:
            compounds: Compounds from `app.core.features.parse_compound`.

        Returns:
            One prediction per compound, in order.
        """
        if not compounds:
            return []
        probabilities = self.predict_proba(vectorize(compounds))
        classes = self._metadata.classes
        return [
            Prediction(
                compound=compound,
                ordering=classes[int(np.argmax(row))],
                probabilities={cls: float(p) for cls, p in zip(classes, row, strict=True)},
                warnings=self.warnings_for(compound),
            )
            for compound, row in zip(compounds, probabilities, strict=True)
        ]

    def warnings_for(self, compound: ParsedCompound) -> tuple[str, ...]:
        """Say what a user should know before trusting a prediction for this compound.

        Args:
            compound: The compound to be predicted.

        Returns:
            Human-readable warnings; empty when nothing is unusual.
        """
        metadata = self._metadata
        if not metadata.trained:
            return (
                f"model {metadata.model_version} is an untrained placeholder: "
                "its probabilities carry no information",
            )
        found: list[str] = []
        unseen = sorted(set(compound.amounts) - self._elements_seen)
        if unseen:
            found.append(
                f"element(s) {', '.join(unseen)} do not occur in the training data; "
                "the prediction is an extrapolation"
            )
        if metadata.density_range is not None:
            low, high = metadata.density_range
            if not low <= compound.density <= high:
                found.append(
                    f"density {compound.density:g} g/cm³ lies outside the training range "
                    f"[{low:g}, {high:g}] g/cm³"
                )
        if compound.is_fractional:
            found.append(
                "fractional (disordered) composition: the training data hold only "
                "ordered compounds with whole-number formulas"
            )
        return tuple(found)
