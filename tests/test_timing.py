"""The stage timer behind the Server-Timing header."""

from __future__ import annotations

import time

import pytest

from app.core.timing import StageTimer


def test_stages_are_timed_and_a_repeated_stage_adds_up() -> None:
    timer = StageTimer()
    with timer.stage("model"):
        time.sleep(0.01)
    with timer.stage("featurize"):
        pass
    first = timer.seconds["model"]
    with timer.stage("model"):
        time.sleep(0.01)
    assert list(timer.seconds) == ["model", "featurize"]
    assert first >= 0.01
    assert timer.seconds["model"] >= first + 0.01
    assert 0 <= timer.seconds["featurize"] < first


def test_a_stage_that_raises_is_still_counted() -> None:
    timer = StageTimer()
    with pytest.raises(ValueError, match="boom"), timer.stage("featurize"):
        raise ValueError("boom")
    assert timer.seconds["featurize"] >= 0
