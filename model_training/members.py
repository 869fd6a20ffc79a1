"""Fitting the members of a head's ensemble: AdamW, early stopping on validation loss, a mean.

Every head feeds its rows through `training_dataset` and may weight its classes with
`class_weights`. The experiment head and the density estimator are fitted alike: each member
is compiled with AdamW under a cosine decay, fitted until its validation loss stops falling
(after a warm-up), kept at its best epoch, and the exported model is the members' mean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import keras
import numpy as np
import numpy.typing as npt

from app.core.features import N_FEATURES
from model_training.data import CLASSES
from model_training.network import derived_features, training_statistics
from model_training.strategy import strategy_name

logger = logging.getLogger(__name__)


def class_weights(
    labels: npt.NDArray[np.int64], exponent: float, *, n_classes: int = len(CLASSES)
) -> dict[int, float]:
    """Weight each class by its inverse frequency raised to ``exponent``.

    Args:
        labels: Class index of each training row.
        exponent: 0 gives every row weight 1; 1 makes every class weigh the same in total.
        n_classes: Number of classes (Materials Project's four by default).

    Returns:
        Class index to weight, scaled so that the mean weight over the rows is 1.
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    raw = np.where(counts > 0, (len(labels) / (n_classes * np.maximum(counts, 1))) ** exponent, 0)
    scale = len(labels) / float((raw * counts).sum())
    return {i: float(raw[i] * scale) for i in range(n_classes)}


def training_dataset(
    features: npt.NDArray[np.float32],
    targets: npt.NDArray[np.float32] | dict[str, npt.NDArray[np.float32]],
    weights: npt.NDArray[np.float32] | None = None,
    *,
    batch_size: int,
    shuffle_seed: int | None,
) -> Any:
    """A batched ``tf.data`` pipeline of rows, targets (an array, or one per output) and weights.

    Args:
        features: ``(n, 119)`` raw feature rows.
        targets: The targets, an array or a dict of arrays keyed by output name.
        weights: Optional weight of each row.
        batch_size: Rows per batch.
        shuffle_seed: Seed of a reshuffle every epoch; None keeps the order (validation).

    Returns:
        The dataset.
    """
    import tensorflow as tf

    tensors = (features, targets) if weights is None else (features, targets, weights)
    dataset = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle_seed is not None:
        # Every row: len(targets) would count the outputs when targets is a dict of them.
        dataset = dataset.shuffle(len(features), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class MemberFitting(Protocol):
    """What fitting a member reads of a head's configuration."""

    @property
    def ensemble_size(self) -> int:
        """Members of the ensemble."""

    @property
    def epochs(self) -> int:
        """Most passes over the training rows."""

    @property
    def learning_rate(self) -> float:
        """Peak learning rate of AdamW."""

    @property
    def weight_decay(self) -> float:
        """Decoupled weight decay."""

    @property
    def patience(self) -> int | None:
        """Epochs without a lower validation loss before training stops; None: never early."""

    @property
    def warmup_epochs(self) -> int:
        """Epochs before early stopping starts watching."""


def compile_member(
    model: keras.Model,
    config: MemberFitting,
    *,
    steps_per_epoch: int,
    loss: Any,
    loss_weights: dict[str, float] | None = None,
) -> None:
    """Compile a member with AdamW under a cosine decay over all its epochs."""
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps_per_epoch * config.epochs
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay),
        loss=loss,
        loss_weights=loss_weights,
    )


def fit_on_validation_loss(
    model: keras.Model,
    train_data: Any,
    validation_data: Any,
    config: MemberFitting,
    *,
    verbose: int,
) -> tuple[int, int]:
    """Fit until the validation loss stops falling; keep the weights of its lowest epoch.

    Args:
        model: The compiled member.
        train_data: The batched training dataset.
        validation_data: The batched validation dataset.
        config: Epochs, patience and warm-up.
        verbose: Keras progress output.

    Returns:
        The epoch kept (1-based) and the epochs run.
    """
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        mode="min",
        # None runs every epoch (the best one is still kept), whatever the epochs asked for.
        patience=config.epochs if config.patience is None else config.patience,
        restore_best_weights=True,
        start_from_epoch=config.warmup_epochs,
    )
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=config.epochs,
        shuffle=False,
        callbacks=[stopper],
        verbose=verbose,
    )
    losses = history.history["val_loss"]
    watched = losses[config.warmup_epochs :] or losses[-1:]
    best = len(losses) - len(watched) + int(np.argmin(watched))
    return best + 1, len(losses)


def fit_members(
    fit_one: Callable[[int], tuple[keras.Model, int, int]], ensemble_size: int, what: str
) -> tuple[list[keras.Model], tuple[int, ...], tuple[int, ...]]:
    """Fit each member in turn, logging its best epoch.

    Args:
        fit_one: Fits the member of a given index: the model, its best epoch, epochs run.
        ensemble_size: Members to fit.
        what: The head's name, for the log.

    Returns:
        The members, their best epochs and their epochs run.
    """
    members, best_epochs, epochs_run = [], [], []
    for index in range(ensemble_size):
        model, best, epochs = fit_one(index)
        logger.info(
            "%s member %d/%d: best epoch %d of %d", what, index + 1, ensemble_size, best, epochs
        )
        members.append(model)
        best_epochs.append(best)
        epochs_run.append(epochs)
    return members, tuple(best_epochs), tuple(epochs_run)


def average_members(
    members: list[keras.Model], name: str, outputs: tuple[str, ...] | None = None
) -> keras.Model:
    """One model giving the members' mean output (of each named output, for several).

    Args:
        members: Models from ``(n, N_FEATURES)`` features to one output or a dict of them.
        name: The ensemble's name.
        outputs: The names of a dict output's entries; None for a single output.

    Returns:
        The single member itself, or a model averaging them all.
    """
    if len(members) == 1:
        return members[0]
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    answers = [member(features) for member in members]
    if outputs is None:
        return keras.Model(features, keras.layers.Average(name=f"mean_{name}")(answers), name=name)
    return keras.Model(
        features,
        {
            output: keras.layers.Average(name=f"mean_{output}")([a[output] for a in answers])
            for output in outputs
        },
        name=name,
    )


@dataclass(frozen=True)
class FittedMembers:
    """A fitted ensemble of a head fitted here: the members' mean, and how the fit went.

    Attributes:
        model: Raw features to the head's outputs, members averaged.
        config: How it was built and fitted.
        best_epochs: Per member, the epoch (1-based) whose weights were kept.
        epochs_run: Per member, epochs run before early stopping.
        seconds: Wall-clock time of the fit.
        strategy: Name of the distribution strategy it was trained under.
    """

    model: keras.Model
    config: Any
    best_epochs: tuple[int, ...]
    epochs_run: tuple[int, ...]
    seconds: float
    strategy: str


def fit_member(
    build: Callable[[], keras.Model],
    train: tuple[npt.NDArray[np.float32], Any],
    validation: tuple[npt.NDArray[np.float32], Any],
    *,
    config: Any,
    strategy: Any,
    losses: Callable[[], dict[str, Any]],
    verbose: int,
) -> tuple[keras.Model, int, int]:
    """Build, compile and fit one member under ``strategy``, seeded by ``config.seed``.

    Args:
        build: Builds the untrained member (called inside the strategy's scope).
        train: The training rows' features and targets.
        validation: The validation rows' features and targets.
        config: The member's configuration (`MemberFitting`, with ``batch_size`` and
            ``seed``).
        strategy: The ``tf.distribute`` strategy.
        losses: Gives `compile_member`'s ``loss`` (and ``loss_weights``), inside the scope.
        verbose: Keras progress output.

    Returns:
        The member, the epoch kept (1-based) and the epochs run.
    """
    keras.utils.set_random_seed(config.seed)
    steps = -(-len(train[0]) // config.batch_size)
    with strategy.scope():
        model = build()
        compile_member(model, config, steps_per_epoch=steps, **losses())
    best, epochs = fit_on_validation_loss(
        model,
        training_dataset(*train, batch_size=config.batch_size, shuffle_seed=config.seed),
        training_dataset(*validation, batch_size=4096, shuffle_seed=None),
        config,
        verbose=verbose,
    )
    return model, best, epochs


Fitted = TypeVar("Fitted", bound=FittedMembers)


def fit_ensemble(
    fitted: type[Fitted],
    build: Callable[..., keras.Model],
    train: tuple[npt.NDArray[np.float32], Any],
    validation: tuple[npt.NDArray[np.float32], Any],
    *,
    config: Any,
    strategy: Any,
    losses: Callable[[Any], dict[str, Any]],
    what: str,
    rows: str,
    outputs: tuple[str, ...] | None = None,
    quantile_bins: int = 0,
    verbose: int,
) -> Fitted:
    """Fit every member of a density-free head (seeds ``seed``, ``seed + 1``, ...), averaged.

    Args:
        fitted: The head's `FittedMembers` class, built from the fit.
        build: Builds an untrained member from its configuration and, as keyword arguments,
            the training rows' density-free statistics (`training_statistics`).
        train: The training rows' features and targets.
        validation: The validation rows' features and targets.
        config: The head's configuration (a dataclass: `MemberFitting` with ``batch_size``
            and ``seed``).
        strategy: The ``tf.distribute`` strategy.
        losses: Gives a member's `compile_member` ``loss`` (and ``loss_weights``) from its
            configuration.
        what: The head's name, for the log and the ensemble's name.
        rows: How many rows of what it is fitted on, for the log (``"512 rows"``).
        outputs: The names of a dict output's entries; None for a single output.
        quantile_bins: With more than 0, the statistics hold the features' quantiles too.
        verbose: Keras progress output.

    Returns:
        The fitted head: the averaged model (`average_members`), the members' best epochs
        and epochs run, the fit's seconds and the strategy's name.
    """
    started = time.perf_counter()
    derived = derived_features(train[0], with_density=False)
    normalisation = training_statistics(derived, quantile_bins=quantile_bins)
    logger.info(
        "fitting the %s network (%d member(s)) on %s under %s",
        what,
        config.ensemble_size,
        rows,
        strategy_name(strategy),
    )

    def fit_one(index: int) -> tuple[keras.Model, int, int]:
        member = replace(config, seed=config.seed + index)
        return fit_member(
            lambda: build(member, **normalisation),
            train,
            validation,
            config=member,
            strategy=strategy,
            losses=lambda: losses(member),
            verbose=verbose,
        )

    members, best_epochs, epochs_run = fit_members(fit_one, config.ensemble_size, what)
    return fitted(
        model=average_members(members, f"{what}_ensemble", outputs),
        config=config,
        best_epochs=best_epochs,
        epochs_run=epochs_run,
        seconds=time.perf_counter() - started,
        strategy=strategy_name(strategy),
    )
