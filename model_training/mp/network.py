"""The Materials Project head's network: derived features, then a classifier, then serving.

The ``magorder`` preset reads the standardised derived features (`model_training.network`)
and their ranks; the ``seed`` preset is the study's network, the raw vector into a deep SiLU
stack. The served model averages the members' logits, blends them with the compiled trees,
scales them by the calibration temperature and adds the members' spread.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from app.core.features import N_FEATURES
from app.core.model_card import MagneticOrdering
from model_training.mp.config import ModelConfig, Preset
from model_training.network import TemperatureSoftmax, hidden_layers, standardised_features

N_CLASSES = len(MagneticOrdering)


def build_logits_model(
    config: ModelConfig,
    *,
    feature_mean: npt.NDArray[np.float32] | None = None,
    feature_variance: npt.NDArray[np.float32] | None = None,
    feature_quantiles: npt.NDArray[np.float32] | None = None,
) -> keras.Model:
    """Build an untrained network from raw features to class logits.

    Args:
        config: The architecture and its size.
        feature_mean: Training-split mean of each derived feature (``magorder`` preset), baked
            into the model as its standardisation; zeros when omitted.
        feature_variance: Training-split variance of each derived feature; ones when omitted.
        feature_quantiles: Training-split quantiles of each derived feature; with them the
            network also reads each feature's rank (`standardised_features`).

    Returns:
        A Keras model mapping ``(n, 119)`` float32 features to ``(n, 4)`` logits, columns in
        `MagneticOrdering` order.
    """
    keras.utils.set_random_seed(config.seed)
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    if config.preset is Preset.SEED:
        # The study's network, as it was: the raw vector straight into a deep SiLU stack.
        x = features
        for i, units in enumerate(config.hidden_units):
            x = keras.layers.Dense(units, activation="silu", name=f"hidden_{i}")(x)
    else:
        inputs = standardised_features(features, feature_mean, feature_variance, feature_quantiles)
        x = hidden_layers(inputs, config)
    logits = keras.layers.Dense(N_CLASSES, name="logits")(x)
    # Unique per seed: ensemble members live side by side in one exported model.
    return keras.Model(features, logits, name=f"{config.preset}_seed{config.seed}")


def with_probabilities(logits_model: keras.Model, temperature: float = 1.0) -> keras.Model:
    """Wrap a logits model into the served model: raw features to calibrated probabilities.

    Args:
        logits_model: A model from `build_logits_model`, trained.
        temperature: The calibration temperature.

    Returns:
        A model mapping ``(n, 119)`` features to ``(n, 4)`` probabilities that sum to 1.
    """
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    probabilities = TemperatureSoftmax(temperature=temperature, name="probabilities")(
        logits_model(features)
    )
    return keras.Model(features, probabilities, name="magorder_served")


@keras.saving.register_keras_serializable(package="magorder")
class MemberSpread(keras.layers.Layer):  # type: ignore[misc]
    """How far ensemble members disagree: members' logits to ``(n, 1)``.

    Each member's logits go through the same temperature softmax as the served answer; the
    spread is, over the classes, the widest range of the members' probabilities of one class.

    Args:
        temperature: The calibration temperature.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, member_logits: list[Any]) -> Any:
        """Return the ``(n, 1)`` spread of a list of ``(n, classes)`` logits."""
        ops = keras.ops
        members = ops.stack(
            [ops.softmax(logits / self.temperature, axis=-1) for logits in member_logits], axis=1
        )
        ranges = ops.max(members, axis=1) - ops.min(members, axis=1)
        return ops.max(ranges, axis=-1, keepdims=True)

    def compute_output_shape(
        self, input_shapes: list[tuple[int | None, ...]]
    ) -> tuple[int | None, ...]:
        """Return ``(n, 1)``."""
        return (input_shapes[0][0], 1)

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation."""
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="magorder")
class BlendWithTrees(keras.layers.Layer):  # type: ignore[misc]
    """Networks' logits and trees' log-probabilities, weighted (`tree_blend.blend`).

    Args:
        network_share: The networks' weight, in ``[0, 1]``.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, network_share: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= network_share <= 1.0:
            raise ValueError(f"network_share must be in [0, 1], got {network_share=}")
        self.network_share = float(network_share)

    def call(self, inputs: list[Any]) -> Any:
        """Return ``share · log_softmax(network logits) + (1 - share) · trees``."""
        network_logits, tree_log_probabilities = inputs
        networks = keras.ops.log_softmax(network_logits, axis=-1)
        return self.network_share * networks + (1.0 - self.network_share) * tree_log_probabilities

    def compute_output_shape(
        self, input_shapes: list[tuple[int | None, ...]]
    ) -> tuple[int | None, ...]:
        """Return the networks' logits' shape."""
        return input_shapes[0]

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation."""
        return {**super().get_config(), "network_share": self.network_share}


def with_probabilities_and_spread(
    members: tuple[keras.Model, ...],
    temperature: float,
    *,
    trees: keras.Model | None = None,
    network_share: float = 1.0,
    with_spread: bool = True,
) -> keras.Model:
    """The served model of an ensemble: probabilities of the mean logits, and the spread.

    With ``trees``, the logits are ``network_share · log_softmax(mean member logits) + (1 -
    network_share) · trees`` (`model_training.tree_blend.blend`), and each member is blended
    with the same trees before the spread is taken.

    Args:
        members: Logits models from `build_logits_model`, trained (one gives a spread of 0).
        temperature: The calibration temperature.
        trees: Raw features to the trees' class log-probabilities
            (`model_training.compiled_trees.tree_log_probability_model`), or None.
        network_share: The networks' weight in the blend with the trees.
        with_spread: False leaves the spread out.

    Returns:
        A model mapping ``(n, 119)`` features to ``(n, 5)``: the four calibrated
        probabilities, then the members' spread (`MemberSpread`); ``(n, 4)`` without it.
    """
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    logits = [member(features) for member in members]
    mean = logits[0] if len(logits) == 1 else keras.layers.Average(name="mean_logits")(logits)
    if trees is not None:
        tree_log_probabilities = trees(features)
        blended = BlendWithTrees(network_share=network_share, name="blend_with_trees")
        mean = blended([mean, tree_log_probabilities])
        logits = [blended([member, tree_log_probabilities]) for member in logits]
    probabilities = TemperatureSoftmax(temperature=temperature, name="probabilities")(mean)
    if not with_spread:
        return keras.Model(features, probabilities, name="magorder_served")
    spread = MemberSpread(temperature=temperature, name="member_spread")(logits)
    outputs = keras.layers.Concatenate(name="outputs")([probabilities, spread])
    return keras.Model(features, outputs, name="magorder_served")


def build_model(config: ModelConfig) -> keras.Model:
    """Build an untrained served model (placeholder and tests): features to probabilities.

    Args:
        config: The architecture and its size.

    Returns:
        A Keras model mapping ``(n, 119)`` float32 features to ``(n, 4)`` probabilities.
    """
    return with_probabilities(build_logits_model(config))
