"""One evaluation run of the density estimator: baselines and ours, on the same grouped rows.

The rows are the Materials Project snapshot's, split by reduced formula with the same seed as
the Materials Project head, so the test rows are compositions neither model has seen. Scored:
the training mean, LightGBM on the same density-free derived features, and the network. Then
what matters to a user who gives no density: how much the Materials Project head's answers
change when it is given the estimate instead of the real density.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.core.features import DENSITY_INDEX, N_ELEMENTS, featurize
from app.core.predictor import Predictor
from model_training.baselines import LIGHTGBM_TREE_PARAMETERS
from model_training.data import CLASSES, LabelledData
from model_training.density.network import (
    MAX_DENSITY,
    MIN_DENSITY,
    DensityConfig,
    TrainedDensityNetwork,
    fit_density_network,
)
from model_training.metrics import RegressionScores, score, score_regression
from model_training.mp.evaluate import WELL_KNOWN_COMPOUNDS
from model_training.network import derived_features
from model_training.split import Split

logger = logging.getLogger(__name__)

WORST_ERRORS_SHOWN = 15


@dataclass(frozen=True)
class DensityResult:
    """One model's figures on the test rows.

    Attributes:
        name: Short name (``mean``, ``lightgbm``, ``magorder``).
        description: What the model is, in a few words.
        scores: MAE, RMSE, R² and median absolute error, g/cm³.
    """

    name: str
    description: str
    scores: RegressionScores


@dataclass(frozen=True)
class DensityEvaluation:
    """Everything one evaluation run of the density estimator measured.

    Attributes:
        data: The cleaning report of the snapshot (as a dict).
        split_sizes: Rows in each part of the split.
        results: Every model's scores on the test rows, ours last.
        by_elements: Our scores by number of elements in the formula.
        relative_error_median: Median of |estimate - density| / density on test.
        mp_head: The Materials Project head's test figures given the real density and given
            the estimate; None when no head was given.
        well_known: Our estimates for well-known compounds, beside their real density.
        worst: The test rows with the largest errors.
        network: The trained network.
    """

    data: dict[str, Any]
    split_sizes: dict[str, int]
    results: list[DensityResult]
    by_elements: dict[str, RegressionScores]
    relative_error_median: float
    mp_head: dict[str, Any] | None
    well_known: list[dict[str, Any]]
    worst: list[dict[str, Any]]
    network: TrainedDensityNetwork = field(repr=False)

    def result(self, name: str) -> DensityResult:
        """Return the result of the model called ``name``."""
        return next(result for result in self.results if result.name == name)


def _row_id(data: LabelledData, position: int) -> str:
    """The row's Materials Project id, or the snapshot's record id for rows without one."""
    row = data.rows.iloc[position]
    material = row.get("material_id")
    return str(material) if isinstance(material, str) and material else str(row["record_id"])


def _lightgbm(
    train: LabelledData, validation: LabelledData, test: LabelledData, *, seed: int
) -> tuple[npt.NDArray[np.float64], str]:
    """LightGBM's test estimates, fitted for MAE with early stopping on validation."""
    import lightgbm

    x_train, x_validation, x_test = (
        derived_features(part.features, with_density=False) for part in (train, validation, test)
    )
    regressor = lightgbm.LGBMRegressor(
        n_estimators=3000, objective="l1", **LIGHTGBM_TREE_PARAMETERS, random_state=seed
    )
    stop: list[Callable[..., Any]] = [lightgbm.early_stopping(100, verbose=False)]
    regressor.fit(
        x_train,
        train.features[:, DENSITY_INDEX],
        eval_X=(x_validation,),
        eval_y=(validation.features[:, DENSITY_INDEX],),
        callbacks=stop,
    )
    estimate = np.clip(regressor.predict(x_test), MIN_DENSITY, MAX_DENSITY)
    return estimate, (
        f"LightGBM on the same density-free derived features, {regressor.best_iteration_} "
        "rounds, L1 objective"
    )


def _mp_head_effect(
    predictor: Predictor, test: LabelledData, estimate: npt.NDArray[np.float32]
) -> dict[str, Any]:
    """The MP head's macro-F1 and accuracy on the test rows with real and estimated density."""
    given = predictor.predict_proba(test.features).argmax(axis=1)
    filled = test.features.copy()
    filled[:, DENSITY_INDEX] = estimate
    estimated = predictor.predict_proba(filled).argmax(axis=1)
    # The head's columns follow its card; the labels follow `CLASSES`.
    order = np.asarray([predictor.metadata.classes.index(c) for c in CLASSES])
    inverse = np.argsort(order)
    given_scores = score(test.labels, inverse[given])
    estimated_scores = score(test.labels, inverse[estimated])
    return {
        "model_version": predictor.metadata.model_version,
        "macro_f1_given": given_scores.macro_f1,
        "macro_f1_estimated": estimated_scores.macro_f1,
        "accuracy_given": given_scores.accuracy,
        "accuracy_estimated": estimated_scores.accuracy,
        "answers_changed": float((given != estimated).mean()),
        "rows": len(test.labels),
    }


def _well_known(network: TrainedDensityNetwork) -> list[dict[str, Any]]:
    features = np.stack(
        [featurize(formula, density) for formula, density, _ in WELL_KNOWN_COMPOUNDS]
    )
    estimate = network.estimate(features)
    return [
        {"formula": formula, "density": density, "estimate": round(float(value), 3)}
        for (formula, density, _), value in zip(WELL_KNOWN_COMPOUNDS, estimate, strict=True)
    ]


def run_density_evaluation(
    data: LabelledData,
    split: Split,
    *,
    config: DensityConfig,
    strategy: Any,
    predictor: Predictor | None = None,
    verbose: int = 2,
    on_stage: Callable[[str], None] = lambda _: None,
) -> DensityEvaluation:
    """Fit and score the density estimator beside its baselines on one grouped split.

    Args:
        data: Clean Materials Project rows.
        split: Train, validation and test positions, grouped by reduced formula.
        config: Shape and fitting of the network.
        strategy: The ``tf.distribute`` strategy to fit under.
        predictor: The Materials Project head, to measure the effect of estimated densities
            on its answers; left out when None.
        verbose: Keras progress output.
        on_stage: Told the name of each stage as it starts.

    Returns:
        The figures and the trained network.
    """
    train, validation, test = split.parts(data)
    truth = test.features[:, DENSITY_INDEX].astype(np.float64)
    on_stage("baselines: training mean, LightGBM")
    mean = float(train.features[:, DENSITY_INDEX].mean())
    results = [
        DensityResult(
            "mean",
            f"the training rows' mean density, {mean:.3f} g/cm³",
            score_regression(truth, np.full_like(truth, mean)),
        )
    ]
    lightgbm_estimate, lightgbm_description = _lightgbm(train, validation, test, seed=config.seed)
    results.append(
        DensityResult("lightgbm", lightgbm_description, score_regression(truth, lightgbm_estimate))
    )
    on_stage("the density network")
    network = fit_density_network(
        train, validation, config=config, strategy=strategy, verbose=verbose
    )
    estimate = network.estimate(test.features)
    ours = estimate.astype(np.float64)
    results.append(
        DensityResult(
            "magorder",
            f"the exported network: mean of {config.ensemble_size} MLPs",
            score_regression(truth, ours),
        )
    )
    n_elements = (test.features[:, :N_ELEMENTS] > 0).sum(axis=1)
    by_elements = {
        (str(n) if n < 5 else "5+"): score_regression(truth[mask], ours[mask])
        for n in range(1, 6)
        if (mask := (n_elements == n) if n < 5 else (n_elements >= 5)).sum() >= 10
    }
    error = np.abs(ours - truth)
    worst = [
        {
            "material_id": _row_id(test, i),
            "formula": str(test.rows["reduced_formula"].iloc[i]),
            "density": round(float(truth[i]), 3),
            "estimate": round(float(ours[i]), 3),
        }
        for i in np.argsort(-error)[:WORST_ERRORS_SHOWN]
    ]
    mp_head = None
    if predictor is not None:
        on_stage("the Materials Project head with estimated densities")
        mp_head = _mp_head_effect(predictor, test, estimate)
    return DensityEvaluation(
        data=data.report.to_dict(),
        split_sizes=split.sizes(),
        results=results,
        by_elements=by_elements,
        relative_error_median=float(np.median(error / truth)),
        mp_head=mp_head,
        well_known=_well_known(network),
        worst=worst,
        network=network,
    )
