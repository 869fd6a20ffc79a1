"""The network: derived composition features computed inside the model, then an MLP.

The model takes the raw 119-vector of `app.core.features`, so the API contract stays the same
whatever features the network derives from it.
"""

from __future__ import annotations

from typing import Any

import keras

from app.core.features import N_ELEMENTS, N_FEATURES
from app.core.model_card import MagneticOrdering
from model_training.config import ModelConfig


@keras.saving.register_keras_serializable(package="magorder")
class CompositionEncoder(keras.layers.Layer):  # type: ignore[misc]
    """Turns the raw vector into element fractions plus standardised density.

    Counts depend on how a formula is written down (Fe2O3 has 5 atoms, Fe2O3·H2O more);
    fractions describe the chemistry whatever the formula unit.

    Args:
        density_mean: Mean training density in g/cm³.
        density_std: Standard deviation of the training density in g/cm³.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, density_mean: float, density_std: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.density_mean = density_mean
        self.density_std = density_std

    def call(self, features: Any) -> Any:
        """Map ``(n, 119)`` raw features to ``(n, 119)`` fractions and scaled density."""
        counts = features[:, :N_ELEMENTS]
        total = keras.ops.sum(counts, axis=-1, keepdims=True)
        fractions = counts / keras.ops.maximum(total, 1e-6)
        density = (features[:, N_ELEMENTS:] - self.density_mean) / self.density_std
        return keras.ops.concatenate([fractions, density], axis=-1)

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation."""
        return {
            **super().get_config(),
            "density_mean": self.density_mean,
            "density_std": self.density_std,
        }


def build_model(config: ModelConfig) -> keras.Model:
    """Build the (untrained) classifier.

    Args:
        config: Shape of the network and its density scaling.

    Returns:
        A Keras model mapping ``(n, 119)`` float32 features to ``(n, 4)`` probabilities,
        columns in `MagneticOrdering` order.
    """
    keras.utils.set_random_seed(config.seed)
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    x = CompositionEncoder(
        density_mean=config.density_mean, density_std=config.density_std, name="encoder"
    )(features)
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    probabilities = keras.layers.Dense(
        len(MagneticOrdering), activation="softmax", name="probabilities"
    )(x)
    return keras.Model(features, probabilities, name="magorder")
