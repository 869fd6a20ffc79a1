"""Where predictions come from, as every edge asks for them: the `Backend` protocol.

A backend answers a list of `CompoundQuery` with one result per query, exactly as
``POST /predict/batch`` (formulas) and ``POST /predict/structure/batch`` (structures) do, so
the command line, the Python API and the table route give the same answers whichever backend
predicts. `LocalBackend` is the model in this process; the client's ``RemoteBackend`` is a
magorder service over HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.core.batch import DEFAULT_BATCH_LIMITS, BatchLimits, CompoundQuery, predict_queries
from app.core.predictor import Predictor
from app.core.results import BatchResult, batch_result
from app.core.structure_workers import StructureWorkers

BatchResults = list[BatchResult]


class BackendError(RuntimeError):
    """The predictions cannot be had (server unreachable, refusing, or answering nonsense)."""


class Backend(Protocol):
    """Predicts batches of queries, each failing alone."""

    @property
    def max_batch_size(self) -> int:
        """Most queries one call may take."""
        ...

    def predict(self, queries: Sequence[CompoundQuery]) -> BatchResults:
        """Predict the queries; one result per query, in order, ``index`` its position."""
        ...


class LocalBackend:
    """The model loaded in this process, run by the core code that serves the batch routes.

    Args:
        predictor: The loaded model.
        limits: Bounds on formulas and structures, as the service's settings give them.
        max_batch_size: Queries per model call.
        structures: The worker processes that read structure files; by default ones of its
            own, bounded by ``limits``, started at the first structure.
    """

    def __init__(
        self,
        predictor: Predictor,
        limits: BatchLimits = DEFAULT_BATCH_LIMITS,
        max_batch_size: int = 1000,
        structures: StructureWorkers | None = None,
    ) -> None:
        self.predictor = predictor
        """The loaded model."""
        self.max_batch_size = max_batch_size
        """Queries per model call."""
        self._limits = limits
        self._structures = structures or StructureWorkers(
            limits=limits.structure, formula_limits=limits.formula
        )

    def predict(self, queries: Sequence[CompoundQuery]) -> BatchResults:
        """Predict the queries in one model call."""
        predictor = self.predictor
        return [
            batch_result(
                result,
                index=index,
                model_version=predictor.metadata.model_version,
                experiment_version=predictor.experiment_version,
                max_formula_length=self._limits.formula.max_length,
            )
            for index, result in enumerate(
                predict_queries(queries, predictor, self._limits, structures=self._structures)
            )
        ]
