"""Classification scores, class-prior reweighting, calibration error and temperature scaling."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from model_training.data import CLASSES

MP_CLASS_PRIOR: dict[str, float] = {"NM": 0.54, "FM": 0.37, "FiM": 0.07, "AFM": 0.02}
"""Share of each ordering among all Materials Project materials (2025, 154,803 materials)."""

Labels = npt.NDArray[np.int64]
Probabilities = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ClassScores:
    """Precision, recall and F1 of one class, and how many rows truly belong to it."""

    precision: float
    recall: float
    f1: float
    support: float


@dataclass(frozen=True, slots=True)
class Scores:
    """How well predictions match labels.

    Attributes:
        n: Number of rows scored.
        accuracy: Share of rows predicted right.
        macro_f1: Unweighted mean of the four classes' F1: the headline figure.
        balanced_accuracy: Mean recall over the classes present.
        per_class: Scores of each class, by class name.
        confusion: Rows are true classes, columns predicted classes, in `CLASSES` order
            (weighted counts when the scores are reweighted).
    """

    n: int
    accuracy: float
    macro_f1: float
    balanced_accuracy: float
    per_class: dict[str, ClassScores]
    confusion: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        """Return the scores as JSON-ready values."""
        return asdict(self)


def score(
    labels: Labels,
    predicted: Labels,
    sample_weight: npt.NDArray[np.float64] | None = None,
    *,
    classes: Sequence[str] = CLASSES,
) -> Scores:
    """Score predicted classes against labels.

    Args:
        labels: True class index of each row.
        predicted: Predicted class index of each row.
        sample_weight: Optional weight of each row (see `prior_weights`).
        classes: Name of each class index; Materials Project's four orderings by default.

    Returns:
        Accuracy, macro-F1, balanced accuracy, per-class scores and the confusion matrix.
    """
    indices = list(range(len(classes)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=indices, sample_weight=sample_weight, zero_division=0
    )
    matrix = confusion_matrix(labels, predicted, labels=indices, sample_weight=sample_weight)
    support = matrix.sum(axis=1)
    with warnings.catch_warnings():
        # A label source holding one class only: scikit-learn warns, the figure is still right.
        warnings.simplefilter("ignore", UserWarning)
        balanced = (
            float(balanced_accuracy_score(labels, predicted, sample_weight=sample_weight))
            if len(set(labels.tolist())) > 1
            else float(recall[labels[0]])
        )
    return Scores(
        n=len(labels),
        accuracy=float(accuracy_score(labels, predicted, sample_weight=sample_weight)),
        macro_f1=float(
            f1_score(
                labels,
                predicted,
                labels=indices,
                average="macro",
                sample_weight=sample_weight,
                zero_division=0,
            )
        ),
        balanced_accuracy=balanced,
        per_class={
            str(name): ClassScores(
                precision=float(precision[i]),
                recall=float(recall[i]),
                f1=float(f1[i]),
                support=float(support[i]),
            )
            for i, name in enumerate(classes)
        },
        confusion=[[float(value) for value in row] for row in matrix],
    )


def prior_weights(
    labels: Labels, prior: dict[str, float] = MP_CLASS_PRIOR
) -> npt.NDArray[np.float64]:
    """Weight rows so that the classes occur in the proportions of ``prior``.

    Scoring with these weights estimates what a user of the whole Materials Project (mostly
    NM, few AFM) would see, rather than the proportions of the snapshot.

    Args:
        labels: True class index of each row.
        prior: Share of each class name in the population to imitate.

    Returns:
        One weight per row; the weights sum to the number of rows.
    """
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    target = np.asarray([prior[str(name)] for name in CLASSES], dtype=np.float64)
    target = np.where(counts > 0, target, 0.0)
    per_class = np.divide(
        target / target.sum(), counts, out=np.zeros_like(counts), where=counts > 0
    )
    weights: npt.NDArray[np.float64] = per_class[labels] * (len(labels) / per_class[labels].sum())
    return weights


def expected_calibration_error(
    probabilities: Probabilities, labels: Labels, *, n_bins: int = 15
) -> float:
    """Top-label expected calibration error: confidence against accuracy in equal-width bins.

    Args:
        probabilities: ``(n, classes)`` predicted probabilities.
        labels: True class index of each row.
        n_bins: Number of confidence bins over [0, 1].

    Returns:
        The row-weighted mean gap between confidence and accuracy, in [0, 1].
    """
    bins = reliability_bins(probabilities, labels, n_bins=n_bins)
    total = sum(count for _, _, count in bins)
    return float(sum(abs(conf - acc) * count for conf, acc, count in bins) / max(total, 1))


def reliability_bins(
    probabilities: Probabilities, labels: Labels, *, n_bins: int = 15
) -> list[tuple[float, float, int]]:
    """Mean confidence, accuracy and row count of each non-empty confidence bin.

    Args:
        probabilities: ``(n, classes)`` predicted probabilities.
        labels: True class index of each row.
        n_bins: Number of equal-width bins over [0, 1].

    Returns:
        ``(mean confidence, accuracy, rows)`` per non-empty bin, in order of confidence.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    return [
        (float(confidence[which == b].mean()), float(correct[which == b].mean()), int(count))
        for b in range(n_bins)
        if (count := int((which == b).sum())) > 0
    ]


def fit_temperature(logits: npt.NDArray[np.float32], labels: Labels) -> float:
    """Find the temperature that minimises the log loss of ``softmax(logits / T)``.

    Args:
        logits: ``(n, classes)`` validation logits.
        labels: Their true class indices.

    Returns:
        The temperature, between 0.05 and 20.
    """
    values = logits.astype(np.float64)

    def log_loss(log_temperature: float) -> float:
        scaled = log_softmax(values / np.exp(log_temperature), axis=1)
        return float(-scaled[np.arange(len(labels)), labels].mean())

    result = minimize_scalar(log_loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def probabilities_from_logits(
    logits: npt.NDArray[np.float32], temperature: float = 1.0
) -> Probabilities:
    """Return ``softmax(logits / temperature)`` row by row, as float32."""
    return np.asarray(softmax(logits.astype(np.float64) / temperature, axis=1), dtype=np.float32)


@dataclass(frozen=True)
class RegressionScores:
    """How close predicted values are to measured ones (ordering temperatures, densities).

    Attributes:
        n: Records scored.
        mae: Mean absolute error.
        rmse: Root mean squared error.
        r2: Coefficient of determination against the test rows' own mean.
        median_absolute_error: Median absolute error.
    """

    n: int
    mae: float
    rmse: float
    r2: float
    median_absolute_error: float

    def to_dict(self) -> dict[str, float]:
        """Return the scores as JSON-ready values."""
        return {
            "n": self.n,
            "mae": self.mae,
            "rmse": self.rmse,
            "r2": self.r2,
            "median_absolute_error": self.median_absolute_error,
        }


def score_regression(
    measured: npt.NDArray[np.float64], predicted: npt.NDArray[np.float64]
) -> RegressionScores:
    """Score predicted values against measured ones, in their unit.

    Args:
        measured: Measured values.
        predicted: Predicted values.

    Returns:
        MAE, RMSE, R² and median absolute error.
    """
    error = predicted - measured
    spread = float(((measured - measured.mean()) ** 2).sum())
    return RegressionScores(
        n=len(measured),
        mae=float(np.abs(error).mean()),
        rmse=float(np.sqrt((error**2).mean())),
        r2=float(1 - (error**2).sum() / spread) if spread > 0 else float("nan"),
        median_absolute_error=float(np.median(np.abs(error))),
    )
