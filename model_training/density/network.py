"""The density estimator's network, and fitting it under the chosen distribution strategy.

It reads the 119-vector through `CompositionFeatures` without density (the quantity it
estimates), beside a learnt element embedding averaged by atomic fraction, as the experiment
head does. Its output is ``exp`` of a linear unit, so an estimate is always positive; it is
fitted for the mean absolute error in g/cm³, the figure the card and the service report.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from app.core.features import DENSITY_INDEX
from model_training.checks import check_hidden_stack, check_positive
from model_training.data import LabelledData
from model_training.members import FittedMembers, fit_ensemble
from model_training.network import build_density_free_network

logger = logging.getLogger(__name__)

MIN_DENSITY = 0.05
MAX_DENSITY = 30.0
"""Estimates are clipped to this range of g/cm³, the range the service accepts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DensityConfig:
    """Shape of the density network and how it is fitted.

    Attributes:
        hidden_units: Width of each hidden layer.
        dropout: Dropout rate after each hidden layer.
        ensemble_size: Networks, with seeds ``seed``, ``seed + 1``, ..., whose estimates the
            exported estimator averages.
        epochs: Most passes over the training rows.
        batch_size: Rows per gradient step.
        learning_rate: Peak learning rate of AdamW (cosine decay over ``epochs``).
        weight_decay: Decoupled weight decay.
        patience: Epochs without a lower validation loss before training stops.
        warmup_epochs: Epochs before early stopping starts watching.
        element_embedding: Width of a learnt vector per element, averaged over the
            composition by atomic fraction (0: none).
        clip: Standardised features are clipped to ``[-clip, clip]``.
        seed: Seed of initialisation, dropout and shuffling.
    """

    hidden_units: tuple[int, ...] = (512, 256)
    dropout: float = 0.1
    ensemble_size: int = 2
    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 10
    warmup_epochs: int = 10
    element_embedding: int = 64
    clip: float | None = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_hidden_stack(self.hidden_units, self.dropout)
        check_positive(
            ensemble_size=self.ensemble_size,
            epochs=self.epochs,
            batch_size=self.batch_size,
            patience=self.patience,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready values."""
        return asdict(self)


def build_density_network(
    config: DensityConfig,
    *,
    feature_mean: npt.NDArray[np.float32] | None = None,
    feature_variance: npt.NDArray[np.float32] | None = None,
) -> keras.Model:
    """Build an untrained density network.

    Args:
        config: Its shape.
        feature_mean: Training-split mean of each density-free derived feature.
        feature_variance: Their training-split variance.

    Returns:
        A Keras model from ``(n, 119)`` features to ``(n, 1)`` densities in g/cm³.
    """

    def outputs(x: Any) -> Any:
        log_density = keras.layers.Dense(1, name="log_density")(x)
        return keras.ops.clip(keras.ops.exp(log_density), MIN_DENSITY, MAX_DENSITY)

    return build_density_free_network(
        config,
        outputs=outputs,
        name=f"density_seed{config.seed}",
        feature_mean=feature_mean,
        feature_variance=feature_variance,
    )


@dataclass(frozen=True)
class TrainedDensityNetwork(FittedMembers):
    """A fitted density network: the members' mean estimate, in g/cm³ (`FittedMembers`)."""

    config: DensityConfig

    def estimate(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return the ``(n,)`` estimated densities of raw rows, g/cm³."""
        out = self.model.predict(features, batch_size=4096, verbose=0)
        return np.asarray(out, np.float32)[:, 0]


def _densities(data: LabelledData) -> npt.NDArray[np.float32]:
    return np.asarray(data.features[:, DENSITY_INDEX:], np.float32)


def fit_density_network(
    train: LabelledData,
    validation: LabelledData,
    *,
    config: DensityConfig,
    strategy: Any,
    verbose: int = 2,
) -> TrainedDensityNetwork:
    """Fit the members on the training rows, each kept at its epoch of lowest validation MAE.

    Args:
        train: Training rows (their density slot is the target).
        validation: Validation rows, for early stopping.
        config: Shape and fitting of the network.
        strategy: The ``tf.distribute`` strategy to build and fit under.
        verbose: Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.

    Returns:
        The trained network.
    """
    return fit_ensemble(
        TrainedDensityNetwork,
        build_density_network,
        (train.features, _densities(train)),
        (validation.features, _densities(validation)),
        config=config,
        strategy=strategy,
        losses=lambda _: {"loss": "mean_absolute_error"},
        what="density",
        rows=f"{len(train.labels)} rows",
        verbose=verbose,
    )
