"""Timing the stages of a request, for the ``Server-Timing`` response header."""

from __future__ import annotations

import time
from types import TracebackType


class _Stage:
    """Adds the duration of a ``with`` block to one stage of a timer."""

    __slots__ = ("_name", "_seconds", "_started")

    def __init__(self, seconds: dict[str, float], name: str) -> None:
        self._seconds = seconds
        self._name = name
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        self._seconds[self._name] = self._seconds.get(self._name, 0.0) + elapsed


class StageTimer:
    """Wall-clock time spent in named stages; a stage entered twice adds up.

    Example:
        >>> timer = StageTimer()
        >>> with timer.stage("model"):
        ...     pass
        >>> list(timer.seconds)
        ['model']
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        """Time a ``with`` block as part of stage ``name``; it counts even if the block raises.

        Args:
            name: The stage, e.g. ``featurize`` or ``model``.

        Returns:
            The context manager timing the block.
        """
        return _Stage(self.seconds, name)
