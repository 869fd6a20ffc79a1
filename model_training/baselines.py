"""Baselines every network is compared with in the same run, on the same rows."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import GroupKFold

from model_training.data import CLASSES, LabelledData
from model_training.metrics import Probabilities
from model_training.network import derived_features

logger = logging.getLogger(__name__)

LIGHTGBM_TREE_PARAMETERS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 63,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "n_jobs": -1,
    # The same trees whatever the thread count, and no timed choice between row-wise and
    # column-wise histograms: a recipe gives the same teacher whatever the core count.
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
"""The trees of every LightGBM baseline and teacher (the MP head's, the experiment head's,
the density estimator's)."""
LIGHTGBM_CLASSIFIER_PARAMETERS: dict[str, Any] = {
    **LIGHTGBM_TREE_PARAMETERS,
    "class_weight": "balanced",
}
"""The MP classifiers' parameters: the baseline, the teacher, the served head's trees."""


@dataclass(frozen=True, slots=True)
class MajorityBaseline:
    """Always answers the most common training class: the original study's "print NM".

    Attributes:
        class_shares: Share of each class among the training rows.
    """

    class_shares: npt.NDArray[np.float32]

    @classmethod
    def fit(cls, train: LabelledData) -> MajorityBaseline:
        """Count the classes of the training rows."""
        counts = np.bincount(train.labels, minlength=len(CLASSES)).astype(np.float32)
        return cls(class_shares=counts / counts.sum())

    def predict_proba(self, features: npt.NDArray[np.float32]) -> Probabilities:
        """Return the training class shares for every row (arg-max: the majority class)."""
        return np.tile(self.class_shares, (len(features), 1))


@dataclass(frozen=True)
class GradientBoostedTrees:
    """LightGBM on the same derived features the network computes in its graph.

    Attributes:
        booster: The fitted ``lightgbm.LGBMClassifier``.
        best_iteration: Boosting rounds kept by early stopping on the validation rows.
        seconds: Wall-clock time of the fit.
    """

    booster: object
    best_iteration: int
    seconds: float

    @classmethod
    def fit(
        cls, train: LabelledData, validation: LabelledData, *, seed: int = 0
    ) -> GradientBoostedTrees:
        """Fit with balanced class weights, stopping early on validation log loss.

        Args:
            train: Training rows.
            validation: Validation rows for early stopping.
            seed: Seed of row and column subsampling.

        Returns:
            The fitted baseline.
        """
        import lightgbm

        started = time.perf_counter()
        booster = lightgbm.LGBMClassifier(
            n_estimators=2000, **LIGHTGBM_CLASSIFIER_PARAMETERS, random_state=seed
        )
        booster.fit(
            derived_features(train.features),
            train.labels,
            eval_X=(derived_features(validation.features),),
            eval_y=(validation.labels,),
            callbacks=[lightgbm.early_stopping(100, verbose=False)],
        )
        baseline = cls(
            booster=booster,
            best_iteration=int(booster.best_iteration_ or booster.n_estimators),
            seconds=time.perf_counter() - started,
        )
        logger.info(
            "LightGBM: %d boosting rounds kept (%.0f s)", baseline.best_iteration, baseline.seconds
        )
        return baseline

    @staticmethod
    def out_of_fold_probabilities(
        train: LabelledData, *, rounds: int, n_folds: int = 5, seed: int = 0
    ) -> Probabilities:
        """Predict every training row with trees that did not see its formula.

        The folds are grouped by reduced formula, so a row's probabilities never come from
        trees fitted on its polymorphs: they are honest soft targets for distillation.

        Args:
            train: Training rows.
            rounds: Boosting rounds of each fold's model.
            n_folds: Number of folds.
            seed: Seed of row and column subsampling.

        Returns:
            ``(n_train, 4)`` probabilities.
        """
        import lightgbm

        started = time.perf_counter()
        derived = derived_features(train.features)
        groups = train.rows["reduced_formula"].to_numpy()
        probabilities = np.zeros((len(train.labels), len(CLASSES)), dtype=np.float32)
        for fit_rows, predict_rows in GroupKFold(n_splits=n_folds).split(derived, groups=groups):
            booster = lightgbm.LGBMClassifier(
                n_estimators=rounds, **LIGHTGBM_CLASSIFIER_PARAMETERS, random_state=seed
            )
            booster.fit(derived[fit_rows], train.labels[fit_rows])
            probabilities[predict_rows] = booster.predict_proba(derived[predict_rows])
        logger.info(
            "LightGBM teacher: %d out-of-fold predictions (%.0f s)",
            len(probabilities),
            time.perf_counter() - started,
        )
        return probabilities

    def predict_proba(self, features: npt.NDArray[np.float32]) -> Probabilities:
        """Return class probabilities of raw feature rows."""
        probabilities = self.booster.predict_proba(derived_features(features))  # type: ignore[attr-defined]
        return np.asarray(probabilities, dtype=np.float32)
