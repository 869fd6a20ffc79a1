"""The unsure-answer rule: thresholds chosen where answers turn more wrong than right."""

from __future__ import annotations

import numpy as np

from model_training.mp.confidence import (
    MIN_FLAGGED_ROWS,
    choose_rule,
    measure_rule,
    member_spread,
    top_margin,
    with_test_figures,
)

MEMBERS = ("net0", "net1", "net2")


def _answers(margins: np.ndarray) -> np.ndarray:
    """Rows whose top class (0) leads class 1 by each margin."""
    second = (1.0 - margins) / 2
    return np.stack([second + margins, second, np.zeros_like(margins), np.zeros_like(margins)], 1)


def test_top_margin_is_the_lead_of_the_top_class() -> None:
    probabilities = np.asarray([[0.5, 0.3, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]], np.float32)
    np.testing.assert_allclose(top_margin(probabilities), [0.2, 0.0], atol=1e-6)


def test_member_spread_is_the_widest_range_of_one_class() -> None:
    members = np.asarray(
        [[[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1]]], np.float32
    )
    np.testing.assert_allclose(member_spread(members), [0.5], atol=1e-6)
    assert member_spread(np.repeat(members[:, :1], 3, axis=1))[0] == 0.0


def test_thresholds_sit_where_answers_turn_more_wrong_than_right() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    margins = rng.uniform(0, 0.6, n).astype(np.float32)
    # Right 30 % of the time below margin 0.1, 90 % above: taken together, the answers below
    # t are more often wrong than right for t up to about 0.15.
    right = rng.uniform(size=n) < np.where(margins < 0.1, 0.3, 0.9)
    no_spread = np.zeros(n, np.float32)
    rule = choose_rule(_answers(margins), no_spread, np.where(right, 0, 2), MEMBERS)
    assert 0.12 <= rule.margin_below <= 0.17
    assert rule.spread_above is None
    # The same with the spread: right 30 % of the time above 0.5; together, the answers above
    # s are more often wrong than right for s down to about 0.35.
    spread = rng.uniform(0, 0.8, n).astype(np.float32)
    right = rng.uniform(size=n) < np.where(spread > 0.5, 0.3, 0.9)
    sure = _answers(np.full(n, 0.6, np.float32))
    labels = np.where(right, 0, 2)
    rule = choose_rule(sure, spread, labels, MEMBERS)
    assert rule.margin_below == 0.0
    assert rule.spread_above is not None
    assert 0.32 <= rule.spread_above <= 0.4
    figures = measure_rule(rule, sure, spread, labels)
    assert figures.flagged_accuracy is not None
    assert figures.unflagged_accuracy is not None
    assert figures.flagged_accuracy < 0.5 < figures.unflagged_accuracy
    assert figures.flagged == figures.spread_flagged
    quoted = with_test_figures(rule, figures)
    assert quoted.unflagged_accuracy == figures.unflagged_accuracy
    assert quoted.spread_accuracy == figures.spread_accuracy


def test_no_threshold_when_no_answers_are_more_wrong_than_right() -> None:
    margins = np.linspace(0, 0.6, 1000, dtype=np.float32)
    rule = choose_rule(_answers(margins), np.zeros(1000, np.float32), np.zeros(1000, int), MEMBERS)
    assert rule.margin_below == 0.0
    assert rule.spread_above is None
    figures = measure_rule(rule, _answers(margins), np.zeros(1000, np.float32), np.zeros(1000, int))
    assert figures.flagged == 0.0
    assert figures.flagged_accuracy is None


def test_too_few_rows_never_set_a_threshold() -> None:
    margins = np.full(MIN_FLAGGED_ROWS * 4, 0.5, np.float32)
    margins[: MIN_FLAGGED_ROWS - 1] = 0.01  # all wrong, but too few to judge
    labels = np.zeros(len(margins), int)
    labels[: MIN_FLAGGED_ROWS - 1] = 2
    rule = choose_rule(_answers(margins), np.zeros(len(margins), np.float32), labels, MEMBERS)
    assert rule.margin_below == 0.0
