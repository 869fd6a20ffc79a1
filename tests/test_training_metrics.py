"""Scores, reweighting, calibration error, temperature scaling and class weights."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from model_training.members import class_weights
from model_training.metrics import (
    MP_CLASS_PRIOR,
    expected_calibration_error,
    fit_temperature,
    prior_weights,
    probabilities_from_logits,
    score,
)


def test_scores_match_scikit_learn_and_the_confusion_matrix_is_label_by_prediction() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    predicted = np.array([0, 0, 1, 1, 1, 3, 3, 0])
    scores = score(labels, predicted)
    assert scores.macro_f1 == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert scores.accuracy == pytest.approx(5 / 8)
    assert scores.confusion[0] == [2, 1, 0, 0]  # two FM right, one FM called NM
    assert scores.per_class["FiM"].f1 == 0.0
    assert scores.per_class["AFM"].support == 2


def test_majority_answer_has_a_high_accuracy_but_a_low_macro_f1() -> None:
    # The original study's failure, in numbers: "NM" for everything.
    labels = np.array([1] * 85 + [0] * 10 + [2] * 3 + [3] * 2)
    scores = score(labels, np.ones_like(labels))
    assert scores.accuracy == pytest.approx(0.85)
    assert scores.macro_f1 < 0.25


def test_prior_weights_make_the_classes_occur_in_mp_proportions() -> None:
    labels = np.array([0] * 50 + [1] * 10 + [2] * 30 + [3] * 10)
    weights = prior_weights(labels)
    assert weights.sum() == pytest.approx(len(labels))
    shares = {
        c: weights[labels == i].sum() / weights.sum()
        for i, c in enumerate(("FM", "NM", "FiM", "AFM"))
    }
    assert shares == pytest.approx(MP_CLASS_PRIOR)


def test_calibration_error_is_zero_when_confidence_equals_accuracy() -> None:
    # 100 rows at 0.7 confidence, 70 of them right.
    probabilities = np.tile(np.array([0.7, 0.1, 0.1, 0.1], dtype=np.float32), (100, 1))
    labels = np.array([0] * 70 + [1] * 30)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0, abs=1e-6)
    overconfident = np.tile(np.array([0.97, 0.01, 0.01, 0.01], dtype=np.float32), (100, 1))
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.27, abs=1e-3)


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20_000, 4)).astype(np.float32)
    true_probabilities = probabilities_from_logits(logits, temperature=2.5)
    labels = np.array([rng.choice(4, p=p / p.sum()) for p in true_probabilities.astype(float)])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0])
def test_class_weights_keep_the_mean_row_weight_at_one(exponent: float) -> None:
    labels = np.array([0] * 60 + [1] * 25 + [2] * 10 + [3] * 5)
    weights = class_weights(labels, exponent)
    mean = sum(weights[c] for c in labels.tolist()) / len(labels)
    assert mean == pytest.approx(1.0)
    if exponent == 0.0:
        assert list(weights.values()) == pytest.approx([1.0] * 4)
    if exponent == 1.0:  # every class weighs the same in total
        totals = [weights[c] * int((labels == c).sum()) for c in range(4)]
        assert totals == pytest.approx([totals[0]] * 4)
