"""The experiment head's network, and fitting it under the chosen distribution strategy.

One network, two outputs: the logits of FM against AFM, and three quantiles of the logarithm
of the ordering temperature. It reads the 119-vector through `CompositionFeatures` without
density, so nothing it says depends on the density slot. Quantiles of log T are quantiles of
T (the logarithm is monotone), and are built ordered: the median, then the low and high ones
below and above it by a positive margin, so the interval never crosses.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from app.core.features import N_FEATURES
from app.core.model_card import EXPERIMENT_CLASSES
from model_training.checks import check_hidden_stack, check_positive, check_shares
from model_training.data import LabelledData
from model_training.members import (
    FittedMembers,
    class_weights,
    fit_ensemble,
)
from model_training.metrics import score
from model_training.network import (
    TemperatureSoftmax,
    build_density_free_network,
)

logger = logging.getLogger(__name__)

N_EXPERIMENT_CLASSES = len(EXPERIMENT_CLASSES)
ORDERING_OUTPUT = "ordering"
TEMPERATURE_OUTPUT = "log_temperature"
KELVIN_SCALE = 300.0
"""Kelvin that divide the median's error in kelvin in the loss: about the training
temperatures' mean (304 K), so that a typical record's term is near its error in ln T."""
_LOG_KELVIN_CAP = float(np.log(1e4))


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentConfig:
    """Shape of the experiment network and how it is fitted.

    Attributes:
        hidden_units: Width of each hidden layer.
        dropout: Dropout rate after each hidden layer.
        ensemble_size: Networks, with seeds ``seed``, ``seed + 1``, ..., whose logits and
            log-temperature quantiles the exported head averages.
        quantiles: The low, median and high quantile of the temperature (0.1 and 0.9: an 80 %
            interval).
        epochs: Most passes over the training rows.
        batch_size: Rows per gradient step.
        learning_rate: Peak learning rate of AdamW (cosine decay over ``epochs``).
        weight_decay: Decoupled weight decay.
        patience: Epochs without a lower validation loss before training stops; None (the
            default) runs the whole cosine schedule, however many epochs, and keeps its best
            epoch: at 25, one seed stopped at epoch 55 of 150 while the learning rate was
            still high (validation MAE 67.6 K, against 59.8 K at its best epoch, 118).
        warmup_epochs: Epochs before early stopping starts watching.
        class_weighting: Exponent of inverse class frequency used as class weight.
        distillation: Weight of the LightGBM classifier teacher's out-of-fold probabilities
            against the labels in the ordering targets.
        temperature_distillation: Weight of the LightGBM regressor teacher's out-of-fold
            log-temperature, as a second pull on the median, against the pinball loss on the
            measured one. Lower than ``distillation``: at 0.5 the pull held the median near
            the teacher's own out-of-fold errors (docs/model_experiments.md).
        kelvin_weight: Weight of the median's absolute error in kelvin (divided by
            `KELVIN_SCALE`), beside the pinball loss on ln T. The logarithm weighs a 100 K miss
            at 1,000 K like a 10 K miss at 100 K; users read and rank the temperature in
            kelvin. At 1.0 one network's validation MAE fell from 61.9 to 56.3 K, and its
            median error in ln T fell too (docs/model_experiments.md); 0: ln T alone.
        teacher_rounds: Boosting rounds of each teacher fold.
        temperature_weight: Weight of the temperature loss against the ordering loss.
        element_embedding: Width of a learnt vector per element, averaged over the
            composition by atomic fraction and fed beside the derived features (0: none).
        clip: Standardised features are clipped to ``[-clip, clip]``: a rare element's
            fraction, standardised, would otherwise reach values in the hundreds.
        quantile_bins: The network also reads each derived feature's rank among the training
            rows, from quantiles this many bins apart (`QuantileRanks`), as the MP head does;
            0 (the default): not. 32 bins did not help this head (docs/model_experiments.md).
        seed: Seed of initialisation, dropout and shuffling.
    """

    hidden_units: tuple[int, ...] = (512, 256)
    dropout: float = 0.1
    ensemble_size: int = 2
    quantiles: tuple[float, float, float] = (0.1, 0.5, 0.9)
    epochs: int = 150
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int | None = None
    warmup_epochs: int = 10
    class_weighting: float = 0.5
    distillation: float = 0.5
    temperature_distillation: float = 0.15
    kelvin_weight: float = 1.0
    teacher_rounds: int = 600
    temperature_weight: float = 2.0
    element_embedding: int = 64
    clip: float | None = 5.0
    quantile_bins: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_hidden_stack(self.hidden_units, self.dropout)
        check_shares(
            distillation=self.distillation, temperature_distillation=self.temperature_distillation
        )
        low, median, high = self.quantiles
        if not 0.0 < low < median < high < 1.0:
            raise ValueError(f"quantiles must be increasing in (0, 1), got {self.quantiles=}")
        if self.quantile_bins < 0 or self.kelvin_weight < 0:
            raise ValueError(f"bad {self.quantile_bins=} or {self.kelvin_weight=}: negative")
        check_positive(
            ensemble_size=self.ensemble_size, epochs=self.epochs, batch_size=self.batch_size
        )
        if self.patience is not None:
            check_positive(patience=self.patience)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready values."""
        return asdict(self)


@keras.saving.register_keras_serializable(package="magorder")
class OrderedQuantiles(keras.layers.Layer):  # type: ignore[misc]
    """Three unconstrained values to low <= median <= high: median, median -/+ softplus."""

    def call(self, raw: Any) -> Any:
        """Map ``(n, 3)`` raw values to ``(n, 3)`` ordered quantiles."""
        ops = keras.ops
        median = raw[:, 1:2]
        low = median - ops.softplus(raw[:, 0:1])
        high = median + ops.softplus(raw[:, 2:3])
        return ops.concatenate([low, median, high], axis=-1)


def _temperature_loss(
    quantiles: tuple[float, float, float], distillation: float, kelvin_weight: float
) -> Any:
    """Quantile loss of ln T and the median's kelvin error, plus the median's pull to the teacher.

    ``y_true`` holds the measured ln T in column 0 and the teacher's in column 1.
    """
    levels = keras.ops.convert_to_tensor(np.asarray(quantiles, np.float32)[None, :])

    def loss(y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        error = y_true[:, 0:1] - y_pred
        pinball = ops.mean(ops.maximum(levels * error, (levels - 1.0) * error), axis=-1)
        # Capped so that a wild early median cannot overflow exp; no reported T comes close.
        median_kelvin = ops.exp(ops.minimum(y_pred[:, 1], _LOG_KELVIN_CAP))
        kelvin = ops.abs(ops.exp(y_true[:, 0]) - median_kelvin) / KELVIN_SCALE
        pull = ops.abs(y_true[:, 1] - y_pred[:, 1])
        return (1.0 - distillation) * (pinball + kelvin_weight * kelvin) + distillation * 0.5 * pull

    return loss


def _weighted_cross_entropy(y_true: Any, logits: Any) -> Any:
    """Cross-entropy of soft targets (columns 0-1), weighted by the row's class weight (2)."""
    ops = keras.ops
    log_p = ops.log_softmax(logits, axis=-1)
    return -ops.sum(y_true[:, :N_EXPERIMENT_CLASSES] * log_p, axis=-1) * y_true[:, -1]


def build_experiment_network(
    config: ExperimentConfig,
    *,
    feature_mean: npt.NDArray[np.float32] | None = None,
    feature_variance: npt.NDArray[np.float32] | None = None,
    feature_quantiles: npt.NDArray[np.float32] | None = None,
) -> keras.Model:
    """Build an untrained experiment network.

    Args:
        config: Its shape.
        feature_mean: Training-split mean of each density-free derived feature.
        feature_variance: Their training-split variance.
        feature_quantiles: Their training-split quantiles, for their ranks.

    Returns:
        A Keras model from ``(n, 119)`` features to ``{"ordering": (n, 2) logits,
        "log_temperature": (n, 3) ordered quantiles of ln(T / K)}``.
    """

    def outputs(x: Any) -> dict[str, Any]:
        logits = keras.layers.Dense(N_EXPERIMENT_CLASSES, name=ORDERING_OUTPUT)(x)
        raw = keras.layers.Dense(3, name="raw_quantiles")(x)
        quantiles = OrderedQuantiles(name=TEMPERATURE_OUTPUT)(raw)
        return {ORDERING_OUTPUT: logits, TEMPERATURE_OUTPUT: quantiles}

    return build_density_free_network(
        config,
        outputs=outputs,
        name=f"experiment_seed{config.seed}",
        feature_mean=feature_mean,
        feature_variance=feature_variance,
        feature_quantiles=feature_quantiles,
    )


@dataclass(frozen=True, slots=True)
class Teachers:
    """Out-of-fold answers of LightGBM for the training rows (distillation targets).

    Attributes:
        probabilities: ``(n, 2)`` FM/AFM probabilities.
        log_temperature: ``(n,)`` predicted ln(T / K).
    """

    probabilities: npt.NDArray[np.float32]
    log_temperature: npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrainedExperimentNetwork(FittedMembers):
    """A fitted experiment network (`FittedMembers`); its fit's seconds count the teachers.

    Its ``model`` gives the members' mean ``{"ordering", "log_temperature"}``.
    """

    config: ExperimentConfig

    def outputs(
        self, features: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Return the ``(n, 2)`` logits and ``(n, 3)`` quantiles of ln(T / K) of raw rows."""
        out = self.model.predict(features, batch_size=4096, verbose=0)
        return (
            np.asarray(out[ORDERING_OUTPUT], np.float32),
            np.asarray(out[TEMPERATURE_OUTPUT], np.float32),
        )


def log_temperatures(data: LabelledData) -> npt.NDArray[np.float32]:
    """Return ln(T / K) of every record's ordering temperature."""
    kelvin = data.rows["temperature_K"].to_numpy(dtype=np.float64)
    return np.asarray(np.log(kelvin), dtype=np.float32)


def _targets(
    data: LabelledData,
    probabilities: npt.NDArray[np.float32],
    log_temperature: npt.NDArray[np.float32],
    weights: dict[int, float],
) -> dict[str, npt.NDArray[np.float32]]:
    row_weight = np.asarray([weights[int(c)] for c in data.labels], np.float32)[:, None]
    return {
        ORDERING_OUTPUT: np.concatenate([probabilities, row_weight], axis=1),
        TEMPERATURE_OUTPUT: np.stack([log_temperatures(data), log_temperature], axis=1),
    }


def _losses(config: ExperimentConfig) -> dict[str, Any]:
    """The two outputs' losses and their weights, for `compile_member`."""
    return {
        "loss": {
            ORDERING_OUTPUT: _weighted_cross_entropy,
            TEMPERATURE_OUTPUT: _temperature_loss(
                config.quantiles, config.temperature_distillation, config.kelvin_weight
            ),
        },
        "loss_weights": {ORDERING_OUTPUT: 1.0, TEMPERATURE_OUTPUT: config.temperature_weight},
    }


def fit_experiment_network(
    train: LabelledData,
    validation: LabelledData,
    *,
    config: ExperimentConfig,
    teachers: Teachers | None,
    strategy: Any,
    verbose: int = 2,
) -> TrainedExperimentNetwork:
    """Fit the members on the training rows, each kept at its epoch of lowest validation loss.

    Args:
        train: Training records (labels in `EXPERIMENT_CLASSES` order, temperatures in rows).
        validation: Validation records, for early stopping.
        config: Shape and fitting of the network.
        teachers: LightGBM's out-of-fold answers for the training rows; needed when
            ``config.distillation`` or ``config.temperature_distillation`` is above 0.
        strategy: The ``tf.distribute`` strategy to build and fit under.
        verbose: Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.

    Returns:
        The trained network.
    """
    weights = class_weights(train.labels, config.class_weighting, n_classes=N_EXPERIMENT_CLASSES)
    one_hot = np.eye(N_EXPERIMENT_CLASSES, dtype=np.float32)[train.labels]
    log_t = log_temperatures(train)
    if max(config.distillation, config.temperature_distillation) > 0 and teachers is None:
        raise ValueError("distillation needs the teachers' out-of-fold answers")
    d = config.distillation
    soft = one_hot if teachers is None else (1 - d) * one_hot + d * teachers.probabilities
    teacher_log_t = log_t if teachers is None else teachers.log_temperature
    train_targets = _targets(train, soft, teacher_log_t, weights)
    validation_targets = _targets(
        validation,
        np.eye(N_EXPERIMENT_CLASSES, dtype=np.float32)[validation.labels],
        log_temperatures(validation),
        weights,
    )
    network = fit_ensemble(
        TrainedExperimentNetwork,
        build_experiment_network,
        (train.features, train_targets),
        (validation.features, validation_targets),
        config=config,
        strategy=strategy,
        losses=_losses,
        what="experiment",
        rows=f"{len(train.labels)} records",
        outputs=(ORDERING_OUTPUT, TEMPERATURE_OUTPUT),
        quantile_bins=config.quantile_bins,
        verbose=verbose,
    )
    logits, _ = network.outputs(validation.features)
    validation_accuracy = score(
        validation.labels, logits.argmax(axis=1), classes=EXPERIMENT_CLASSES
    ).accuracy
    logger.info(
        "experiment network: validation FM/AFM accuracy %.4f (%.0f s)",
        validation_accuracy,
        network.seconds,
    )
    return network


def interval_margin(
    log_quantiles: npt.NDArray[np.float32],
    log_measured: npt.NDArray[np.float32],
    coverage: float,
) -> float:
    """How far to move the low and high quantiles apart so the interval covers ``coverage``.

    Conformalised quantile regression (Romano, Patterson & Candès, NeurIPS 2019): on rows the
    network was not fitted on, each row's score is how far its measured value lies outside
    its interval (negative inside); the margin is the score's ``coverage`` quantile with the
    finite-sample correction, so that on new rows from the same distribution at least that
    share falls inside ``[low - margin, high + margin]``. A negative margin narrows it.

    Args:
        log_quantiles: ``(n, 3)`` low, median and high ln T of the calibration rows.
        log_measured: ``(n,)`` their measured ln T.
        coverage: The share the interval is meant to hold (0.8 for 10-90 % quantiles).

    Returns:
        The margin, in ln T.
    """
    scores = np.maximum(log_quantiles[:, 0] - log_measured, log_measured - log_quantiles[:, 2])
    level = min(1.0, np.ceil((len(scores) + 1) * coverage) / len(scores))
    return float(np.quantile(scores, level, method="higher"))


def widened(log_quantiles: Any, margin: float) -> Any:
    """The ``(n, 3)`` quantiles of ln T with the interval moved apart by ``margin``.

    One rule for the served graph and the evaluation: it takes a tensor or an array and
    returns a tensor (``np.asarray`` of it for NumPy). The low and high ends never pass the
    median.
    """
    ops = keras.ops
    median = log_quantiles[:, 1:2]
    return ops.concatenate(
        [
            ops.minimum(log_quantiles[:, 0:1] - margin, median),
            median,
            ops.maximum(log_quantiles[:, 2:3] + margin, median),
        ],
        axis=-1,
    )


def served_experiment_model(
    network: TrainedExperimentNetwork, temperature: float, margin: float
) -> keras.Model:
    """Wrap a trained network into the served head: one ``(n, 4)`` output.

    Columns (`app.core.model_card.EXPERIMENT_OUTPUT_COLUMNS`): P(FM | magnetic) after
    temperature scaling, then the low, median and high ordering temperature in kelvin.

    Args:
        network: The trained network.
        temperature: Calibration temperature of the ordering logits.
        margin: `interval_margin` of the temperature interval, in ln T.

    Returns:
        A model from ``(n, 119)`` features to ``(n, 4)``.
    """
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    out = network.model(features)
    probabilities = TemperatureSoftmax(temperature=temperature, name="ordering_probabilities")(
        out[ORDERING_OUTPUT]
    )
    kelvin = keras.ops.exp(widened(out[TEMPERATURE_OUTPUT], margin))
    served = keras.ops.concatenate([probabilities[:, 0:1], kelvin], axis=-1)
    return keras.Model(features, served, name="magorder_experiment_served")
