"""Fitting a network under the chosen distribution strategy, selected on validation macro-F1."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from app.core.features import N_FEATURES
from model_training.baselines import GradientBoostedTrees
from model_training.data import CLASSES, LabelledData
from model_training.members import class_weights, training_dataset
from model_training.metrics import score
from model_training.mp.config import ModelConfig, Preset, TrainConfig
from model_training.mp.network import N_CLASSES, build_logits_model
from model_training.network import derived_features, training_statistics
from model_training.strategy import strategy_name

logger = logging.getLogger(__name__)

MONITOR = "val_macro_f1"

ModelBuilder = Callable[..., keras.Model]
"""Builds an untrained logits model: ``build(config, feature_mean=..., feature_variance=...,
feature_quantiles=...)`` (the last only when ``config.quantile_bins`` is above 0)."""


@dataclass(frozen=True)
class TrainedNetwork:
    """A fitted network and how its training went.

    Attributes:
        logits_model: Raw features to class logits: the mean logits of the ensemble members,
            each at its epoch of best validation macro-F1.
        members: The ensemble members themselves (``logits_model`` averages them).
        model_config: Its architecture.
        train_config: How it was fitted.
        best_epochs: Per member, the epoch (1-based) whose weights were kept.
        epochs_run: Per member, epochs run before early stopping.
        member_validation_macro_f1: Per member, validation macro-F1 at its best epoch.
        validation_macro_f1: Validation macro-F1 of the whole (averaged) network.
        seconds: Wall-clock time of the fit.
        strategy: Name of the distribution strategy it was trained under.
    """

    logits_model: keras.Model
    members: tuple[keras.Model, ...]
    model_config: ModelConfig
    train_config: TrainConfig
    best_epochs: tuple[int, ...]
    epochs_run: tuple[int, ...]
    member_validation_macro_f1: tuple[float, ...]
    validation_macro_f1: float
    seconds: float
    strategy: str

    def logits(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return the class logits of raw feature rows."""
        return _predict_logits(self.logits_model, features)

    def member_logits(self, features: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """Return each member's class logits of raw feature rows."""
        return [_predict_logits(member, features) for member in self.members]


def _predict_logits(
    model: keras.Model, features: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    logits: npt.NDArray[np.float32] = np.asarray(
        model.predict(features, batch_size=4096, verbose=0), dtype=np.float32
    )
    return logits


def one_hot(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Return ``(n, 4)`` one-hot rows of class indices."""
    return np.eye(N_CLASSES, dtype=np.float32)[labels]


def _standardisation(config: ModelConfig, features: npt.NDArray[np.float32]) -> dict[str, Any]:
    """Mean, variance and quantiles of each derived feature over the training rows only.

    The seed preset reads the raw vector and gets none; ``config.quantile_bins`` of 0 leaves
    the quantiles out.
    """
    if config.preset is Preset.SEED:
        return {}
    return training_statistics(derived_features(features), quantile_bins=config.quantile_bins)


def _fit_member(
    train: LabelledData,
    validation: LabelledData,
    *,
    targets: npt.NDArray[np.float32],
    normalisation: dict[str, Any],
    model_config: ModelConfig,
    train_config: TrainConfig,
    strategy: Any,
    verbose: int,
    build: ModelBuilder,
) -> tuple[keras.Model, int, int, float]:
    """Fit one network; return it at its best epoch, that epoch, epochs run and its score."""
    keras.utils.set_random_seed(model_config.seed)
    steps_per_epoch = -(-len(train.labels) // train_config.batch_size)
    with strategy.scope():
        model = build(model_config, **normalisation)
        schedule = keras.optimizers.schedules.CosineDecay(
            train_config.learning_rate, decay_steps=steps_per_epoch * train_config.epochs
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(
                learning_rate=schedule, weight_decay=train_config.weight_decay
            ),
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=train_config.label_smoothing
            ),
            # threshold=None: the arg-max class is the prediction, as the service reports it.
            metrics=[keras.metrics.F1Score(average="macro", threshold=None, name="macro_f1")],
        )
    weights = class_weights(train.labels, train_config.class_weighting)
    row_weights = np.asarray([weights[int(c)] for c in train.labels], dtype=np.float32)
    stopper = keras.callbacks.EarlyStopping(
        monitor=MONITOR,
        mode="max",
        patience=train_config.patience,
        restore_best_weights=True,
        start_from_epoch=train_config.warmup_epochs,
        verbose=0,
    )
    history = model.fit(
        training_dataset(
            train.features,
            targets,
            row_weights,
            batch_size=train_config.batch_size,
            shuffle_seed=model_config.seed,
        ),
        validation_data=training_dataset(
            validation.features,
            one_hot(validation.labels),
            None,
            batch_size=4096,
            shuffle_seed=None,
        ),
        epochs=train_config.epochs,
        shuffle=False,  # the dataset shuffles itself, with the member's seed
        callbacks=[stopper],
        verbose=verbose,
    )
    scores = history.history[MONITOR]
    # The weights kept are those of the best epoch after the warm-up (or the last epoch).
    watched = scores[train_config.warmup_epochs :] or scores[-1:]
    best = len(scores) - len(watched) + int(np.argmax(watched))
    return model, best + 1, len(scores), float(scores[best])


def _mean_logits(members: list[keras.Model], name: str) -> keras.Model:
    """One model whose logits are the mean of the members' logits."""
    if len(members) == 1:
        return members[0]
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    logits = keras.layers.Average(name="mean_logits")([member(features) for member in members])
    return keras.Model(features, logits, name=name)


def fit_network(
    train: LabelledData,
    validation: LabelledData,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    strategy: Any,
    verbose: int = 2,
    teacher: npt.NDArray[np.float32] | None = None,
    build: ModelBuilder = build_logits_model,
) -> TrainedNetwork:
    """Fit a network on the training rows, keeping the epoch of best validation macro-F1.

    With ``model_config.ensemble_size`` above 1, that many members are fitted with seeds
    ``seed``, ``seed + 1``, ... and the network averages their logits. With
    ``train_config.distillation`` above 0, the targets mix the one-hot labels with a LightGBM
    teacher's out-of-fold probabilities (knowledge distillation: the trees' view of the
    tabular features, learnt by a network the service can run).

    Args:
        train: Training rows.
        validation: Validation rows, for early stopping and model selection.
        model_config: The architecture to build.
        train_config: Epochs, batch size, learning rate, class weighting, patience.
        strategy: The ``tf.distribute`` strategy to build and fit under.
        verbose: Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.
        teacher: The teacher's out-of-fold probabilities of the training rows, when already
            computed (several fits on one split share them); fitted here when omitted.
        build: Builds each member; `build_logits_model` unless an experiment swaps it.

    Returns:
        The trained network.
    """
    started = time.perf_counter()
    logger.info(
        "fitting %s (%d member(s)) on %d rows under %s; class weights %s",
        model_config.preset,
        model_config.ensemble_size,
        len(train.labels),
        strategy_name(strategy),
        {
            str(CLASSES[i]): round(w, 3)
            for i, w in class_weights(train.labels, train_config.class_weighting).items()
        },
    )
    targets = one_hot(train.labels)
    if train_config.distillation > 0:
        if teacher is None:
            teacher = GradientBoostedTrees.out_of_fold_probabilities(
                train, rounds=train_config.teacher_rounds, seed=model_config.seed
            )
        targets = (1 - train_config.distillation) * targets + train_config.distillation * teacher
    normalisation = _standardisation(model_config, train.features)  # the same for every member
    members, best_epochs, epochs_run, member_scores = [], [], [], []
    for index in range(model_config.ensemble_size):
        member_config = replace(model_config, seed=model_config.seed + index)
        model, best_epoch, epochs, member_score = _fit_member(
            train,
            validation,
            targets=targets,
            normalisation=normalisation,
            model_config=member_config,
            train_config=train_config,
            strategy=strategy,
            verbose=verbose,
            build=build,
        )
        logger.info(
            "%s member %d/%d: validation macro-F1 %.4f at epoch %d of %d (%d parameters)",
            model_config.preset,
            index + 1,
            model_config.ensemble_size,
            member_score,
            best_epoch,
            epochs,
            model.count_params(),
        )
        members.append(model)
        best_epochs.append(best_epoch)
        epochs_run.append(epochs)
        member_scores.append(member_score)
    logits_model = _mean_logits(members, name=f"magorder_{model_config.preset}_ensemble")
    predicted = _predict_logits(logits_model, validation.features).argmax(axis=1)
    network = TrainedNetwork(
        logits_model=logits_model,
        members=tuple(members),
        model_config=model_config,
        train_config=train_config,
        best_epochs=tuple(best_epochs),
        epochs_run=tuple(epochs_run),
        member_validation_macro_f1=tuple(member_scores),
        validation_macro_f1=score(validation.labels, predicted).macro_f1,
        seconds=time.perf_counter() - started,
        strategy=strategy_name(strategy),
    )
    logger.info(
        "%s: validation macro-F1 %.4f (%.0f s)",
        model_config.preset,
        network.validation_macro_f1,
        network.seconds,
    )
    return network
