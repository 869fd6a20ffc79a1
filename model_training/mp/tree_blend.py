"""The trees beside the served networks: depth-capped LightGBM fits, and the networks' share.

The served head blends the networks with a few LightGBM boosters compiled into its graph
(`model_training.compiled_trees`): its logits are ``share · log_softmax(mean network logits) +
(1 - share) · mean over boosters of log_softmax(booster raw scores)``, with the share chosen
on validation macro-F1. Trees fit the sharp edges between the snapshot's label sources that
the networks smooth over; the networks generalise across elements that the trees see rarely.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from scipy.special import log_softmax

from model_training.baselines import LIGHTGBM_CLASSIFIER_PARAMETERS
from model_training.data import LabelledData
from model_training.metrics import score
from model_training.mp.compiled_trees import (
    snap_thresholds,
    tree_arrays,
    tree_log_probability_model,
)
from model_training.mp.network import N_CLASSES
from model_training.network import derived_features

logger = logging.getLogger(__name__)

SHARE_GRID: tuple[float, ...] = tuple(round(1.0 - 0.1 * i, 1) for i in range(11))
"""Network shares tried on validation, networks alone first (they win ties)."""


@dataclass(frozen=True)
class TreeSets:
    """LightGBM boosters fitted with different seeds, compiled into one Keras model.

    Attributes:
        model: Raw 119-vectors to the boosters' mean class log-probabilities
            (`tree_log_probability_model`): what the served graph runs.
        seeds: Seed of each booster's row and column subsampling.
        rounds: Boosting rounds each kept (early stopping on validation).
        depth: The depth cap of every tree.
        learning_rate: Their learning rate.
        thresholds_moved: Thresholds `snap_thresholds` moved out of clusters of nearly equal
            training values.
        seconds: Wall-clock time of fitting and compiling them.
    """

    model: keras.Model
    seeds: tuple[int, ...]
    rounds: tuple[int, ...]
    depth: int
    learning_rate: float
    thresholds_moved: int
    seconds: float

    @classmethod
    def fit(
        cls,
        train: LabelledData,
        validation: LabelledData,
        *,
        seeds: Sequence[int],
        depth: int,
        learning_rate: float,
    ) -> TreeSets:
        """Fit one booster per seed on the derived features and compile them all.

        Each has the baselines' parameters (balanced class weights) with ``max_depth`` capped
        at ``depth``, and stops early on validation log loss.

        Args:
            train: Training rows.
            validation: Validation rows for early stopping.
            seeds: One booster per seed.
            depth: Depth cap of every tree.
            learning_rate: Learning rate of every booster.

        Returns:
            The compiled sets.
        """
        import lightgbm

        started = time.perf_counter()
        train_rows = derived_features(train.features)
        validation_rows = derived_features(validation.features)
        compiled, rounds, moved = [], [], 0
        for index, seed in enumerate(seeds):
            booster = lightgbm.LGBMClassifier(
                n_estimators=2000,
                **{
                    **LIGHTGBM_CLASSIFIER_PARAMETERS,
                    "max_depth": depth,
                    "learning_rate": learning_rate,
                },
                random_state=seed,
            )
            booster.fit(
                train_rows,
                train.labels,
                eval_X=(validation_rows,),
                eval_y=(validation.labels,),
                callbacks=[lightgbm.early_stopping(100, verbose=False)],
            )
            kept = int(booster.best_iteration_ or booster.n_estimators)
            dump = booster.booster_.dump_model(num_iteration=kept)
            arrays, n_moved = snap_thresholds(
                tree_arrays(dump, depth, first_column=N_CLASSES * index), train_rows
            )
            compiled.append(arrays)
            rounds.append(kept)
            moved += n_moved
            logger.info(
                "tree set %d/%d (seed %d): %d rounds kept, %d thresholds moved out of clusters",
                index + 1,
                len(seeds),
                seed,
                kept,
                n_moved,
            )
        return cls(
            model=tree_log_probability_model(compiled),
            seeds=tuple(seeds),
            rounds=tuple(rounds),
            depth=depth,
            learning_rate=learning_rate,
            thresholds_moved=moved,
            seconds=time.perf_counter() - started,
        )

    @property
    def n_trees(self) -> int:
        """Trees in all the sets together."""
        return sum(self.rounds) * N_CLASSES

    def log_probabilities(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Their mean class log-probabilities of raw feature rows, computed by the graph."""
        return np.asarray(self.model.predict(features, batch_size=4096, verbose=0), np.float32)

    def to_dict(self) -> dict[str, Any]:
        """What was fitted, for the card's training configuration."""
        return {
            "seeds": list(self.seeds),
            "rounds": list(self.rounds),
            "trees": self.n_trees,
            "depth": self.depth,
            "learning_rate": self.learning_rate,
            "thresholds_moved": self.thresholds_moved,
            "fit_seconds": round(self.seconds, 1),
        }


def blend(
    network_logits: npt.NDArray[np.float32],
    tree_log_probabilities: npt.NDArray[np.float32],
    share: float,
) -> npt.NDArray[np.float32]:
    """The served head's logits: the networks' log-probabilities and the trees', weighted.

    Args:
        network_logits: ``(n, 4)`` logits of the networks (their mean, or one member's).
        tree_log_probabilities: ``(n, 4)`` from `TreeSets.log_probabilities`.
        share: The networks' weight, in ``[0, 1]``.

    Returns:
        ``(n, 4)`` logits (log-probabilities up to a constant per row).
    """
    mixed = share * log_softmax(network_logits, axis=-1) + (1 - share) * tree_log_probabilities
    return np.asarray(mixed, dtype=np.float32)


def choose_share(
    network_logits: npt.NDArray[np.float32],
    tree_log_probabilities: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
) -> tuple[float, dict[float, float]]:
    """Pick the networks' share with the highest macro-F1 on validation rows.

    Args:
        network_logits: ``(n, 4)`` mean logits of the networks on the validation rows.
        tree_log_probabilities: ``(n, 4)`` the trees' on the same rows.
        labels: Their labels.

    Returns:
        The share (ties go to the larger share, the networks alone first) and the
        validation macro-F1 of every share tried.
    """
    scores = {
        share: score(
            labels, blend(network_logits, tree_log_probabilities, share).argmax(axis=1)
        ).macro_f1
        for share in SHARE_GRID
    }
    best = max(SHARE_GRID, key=lambda share: scores[share])  # max keeps the first of ties
    logger.info(
        "network share %.1f: validation macro-F1 %.4f (networks alone %.4f)",
        best,
        scores[best],
        scores[1.0],
    )
    return best, scores
