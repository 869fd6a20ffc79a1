"""Fitting the members of a head's ensemble: AdamW, early stopping on validation loss, a mean.

The experiment head and the density estimator are fitted alike: each member is compiled with
AdamW under a cosine decay, fitted until its validation loss stops falling (after a warm-up),
kept at its best epoch, and the exported model is the members' mean.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np

from app.core.features import N_FEATURES

logger = logging.getLogger(__name__)


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
