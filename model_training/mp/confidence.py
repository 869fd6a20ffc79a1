"""When an answer of the Materials Project head is flagged as unsure, and how that rule fares.

Two signs of an unsure answer are measured: the top probability barely leading the second
(the margin), and the members of the ensemble disagreeing (their spread). Each threshold is
chosen on the validation rows as the point past which answers were wrong more often than
right; the test rows then say how often the flag fires and how accurate the flagged and the
unflagged answers are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.core.model_card import ConfidenceRule
from model_training.metrics import Labels, Probabilities

MARGIN_GRID: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 51))
"""Margins tried (top probability minus the second)."""
SPREAD_GRID: tuple[float, ...] = tuple(round(0.02 * i, 2) for i in range(1, 50))
"""Member spreads tried."""
MIN_FLAGGED_ROWS = 50
"""A threshold must flag at least this many validation rows to be judged by their accuracy."""
_MORE_WRONG_THAN_RIGHT = 0.5


def member_spread(member_probabilities: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """How far the members disagree: over the classes, the widest range of their probabilities.

    The same as the exported model's `model_training.mp.network.MemberSpread`.

    Args:
        member_probabilities: ``(n, members, classes)`` each member's probabilities.

    Returns:
        ``(n,)`` values in [0, 1]: 0 when every member gives the same probabilities, 1 when
        one member is sure of a class that another rules out.
    """
    ranges = member_probabilities.max(axis=1) - member_probabilities.min(axis=1)
    return np.asarray(ranges.max(axis=1), dtype=np.float32)


def top_margin(probabilities: Probabilities) -> npt.NDArray[np.float32]:
    """The top probability minus the second of each row."""
    ordered = np.sort(probabilities, axis=1)
    return np.asarray(ordered[:, -1] - ordered[:, -2], dtype=np.float32)


def choose_rule(
    probabilities: Probabilities,
    spread: npt.NDArray[np.float32],
    labels: Labels,
    members: tuple[str, ...],
) -> ConfidenceRule:
    """Choose both thresholds on the validation rows.

    Args:
        probabilities: ``(n, classes)`` the head's validation probabilities.
        spread: ``(n,)`` its members' spread on the same rows.
        labels: Their labels.
        members: Names of the members.

    Returns:
        The rule, with the largest margin below which (and the smallest spread above which)
        at least `MIN_FLAGGED_ROWS` validation answers were right less than half the time; a
        margin of 0 and no spread threshold when no such value exists. Its accuracies are
        left for `measure_rule` to fill in on the test rows.
    """
    correct = probabilities.argmax(axis=1) == labels
    margin = top_margin(probabilities)
    margin_below = 0.0
    for threshold in MARGIN_GRID:
        flagged = margin < threshold
        if flagged.sum() >= MIN_FLAGGED_ROWS and correct[flagged].mean() < _MORE_WRONG_THAN_RIGHT:
            margin_below = threshold
    spread_above = None
    for threshold in reversed(SPREAD_GRID):
        flagged = spread > threshold
        if flagged.sum() >= MIN_FLAGGED_ROWS and correct[flagged].mean() < _MORE_WRONG_THAN_RIGHT:
            spread_above = threshold
    return ConfidenceRule(members=members, margin_below=margin_below, spread_above=spread_above)


@dataclass(frozen=True, slots=True)
class RuleFigures:
    """How a rule fares on some rows.

    Attributes:
        rows: Rows scored.
        margin_flagged: Share flagged by the margin.
        spread_flagged: Share flagged by the spread.
        flagged: Share flagged by either.
        margin_accuracy: Accuracy of the answers the margin flags (None if none).
        spread_accuracy: Accuracy of the answers the spread flags (None if none).
        flagged_accuracy: Accuracy of the answers either flags (None if none).
        unflagged_accuracy: Accuracy of the others.
    """

    rows: int
    margin_flagged: float
    spread_flagged: float
    flagged: float
    margin_accuracy: float | None
    spread_accuracy: float | None
    flagged_accuracy: float | None
    unflagged_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready values."""
        return asdict(self)


def _accuracy(correct: npt.NDArray[np.bool_], rows: npt.NDArray[np.bool_]) -> float | None:
    return float(correct[rows].mean()) if rows.any() else None


def measure_rule(
    rule: ConfidenceRule,
    probabilities: Probabilities,
    spread: npt.NDArray[np.float32],
    labels: Labels,
) -> RuleFigures:
    """Measure how often a rule flags answers and how accurate the flagged ones are.

    Args:
        rule: The thresholds.
        probabilities: ``(n, classes)`` probabilities.
        spread: ``(n,)`` the members' spread.
        labels: The labels.

    Returns:
        The figures.
    """
    correct = probabilities.argmax(axis=1) == labels
    by_margin = top_margin(probabilities) < rule.margin_below
    by_spread = (
        np.zeros_like(by_margin) if rule.spread_above is None else spread > rule.spread_above
    )
    either = by_margin | by_spread
    return RuleFigures(
        rows=len(labels),
        margin_flagged=float(by_margin.mean()),
        spread_flagged=float(by_spread.mean()),
        flagged=float(either.mean()),
        margin_accuracy=_accuracy(correct, by_margin),
        spread_accuracy=_accuracy(correct, by_spread),
        flagged_accuracy=_accuracy(correct, either),
        unflagged_accuracy=_accuracy(correct, ~either),
    )


def with_test_figures(rule: ConfidenceRule, test: RuleFigures) -> ConfidenceRule:
    """The rule with the test accuracies it quotes to users."""
    return rule.model_copy(
        update={
            "margin_accuracy": test.margin_accuracy,
            "spread_accuracy": test.spread_accuracy,
            "unflagged_accuracy": test.unflagged_accuracy,
        }
    )
