"""Predicting a batch of compounds, each failing alone: for the API, the CLI and Python.

A query is a formula (with a density, or none to have it estimated) or a crystal structure.
Each is checked on its own; those that pass are predicted in one model call, so a bad item
costs its own answer and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from app.core.errors import InvalidCompoundError
from app.core.features import DEFAULT_LIMITS, FormulaLimits, ParsedCompound, parse_compound
from app.core.predictor import Prediction, Predictor
from app.core.structure_workers import StructureWorkers
from app.core.structures import (
    DEFAULT_STRUCTURE_LIMITS,
    ParsedStructure,
    StructureFormat,
    StructureLimits,
)
from app.core.timing import StageTimer

MAX_ID_LENGTH = 200
"""Longest ``id`` a query may carry (it is echoed in its result)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CompoundQuery:
    """One compound to predict: a formula, or a crystal structure.

    Attributes:
        formula: A chemical formula (when ``structure`` is None).
        density: Its density in g/cm³; None to have it estimated from the composition.
        structure: A crystal structure's text (CIF, POSCAR, pymatgen JSON, XSF).
        structure_format: The structure's format; detected from the text when None.
        id: The caller's name for it, echoed in its result.
    """

    formula: str | None = None
    density: float | None = None
    structure: str | None = None
    structure_format: StructureFormat | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class QueryPrediction:
    """A query that was predicted.

    Attributes:
        query: The query.
        prediction: Its prediction; ``prediction.compound`` holds the density used.
        structure: What was read from its structure, when it was one.
    """

    query: CompoundQuery
    prediction: Prediction
    structure: ParsedStructure | None = None


@dataclass(frozen=True, slots=True)
class QueryFailure:
    """A query that could not be predicted.

    Attributes:
        query: The query.
        error: Why, in the domain's terms.
    """

    query: CompoundQuery
    error: InvalidCompoundError


QueryResult = QueryPrediction | QueryFailure


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLimits:
    """Bounds on what a query may be.

    Attributes:
        formula: Bounds on formulas.
        structure: Bounds on structures.
    """

    formula: FormulaLimits = DEFAULT_LIMITS
    structure: StructureLimits = DEFAULT_STRUCTURE_LIMITS


DEFAULT_BATCH_LIMITS = BatchLimits()


def predict_queries(
    queries: Sequence[CompoundQuery],
    predictor: Predictor,
    limits: BatchLimits = DEFAULT_BATCH_LIMITS,
    timer: StageTimer | None = None,
    *,
    structures: StructureWorkers,
) -> list[QueryResult]:
    """Check every query, then predict those that pass in one model call.

    Args:
        queries: The compounds.
        predictor: The loaded model.
        limits: Bounds on formulas.
        timer: Receives the time spent in the ``featurize`` and ``model`` stages.
        structures: The worker processes that read the structure queries (with their own
            bounds on structures).

    Returns:
        One result per query, in order: its prediction, or the error it alone has.

    Raises:
        ServiceBusyError: Structures are to be read and the workers take no more callers.
    """
    timer = timer or StageTimer()
    results: list[QueryResult | None] = [None] * len(queries)
    valid: list[tuple[int, ParsedCompound, ParsedStructure | None]] = []
    with timer.stage("featurize"):
        read = iter(
            structures.read(
                [
                    (query.structure, query.structure_format)
                    for query in queries
                    if query.structure is not None
                ]
            )
        )
        for index, query in enumerate(queries):
            structure: ParsedStructure | None = None
            try:
                if query.structure is None:
                    compound = parse_compound(query.formula or "", query.density, limits.formula)
                else:
                    outcome = next(read)
                    if isinstance(outcome, InvalidCompoundError):
                        raise outcome
                    structure, compound = outcome, outcome.compound
                # Checked here: one such item must not fail the batch's model call.
                predictor.check_density_available(compound)
                valid.append((index, compound, structure))
            except InvalidCompoundError as exc:
                results[index] = QueryFailure(query, exc)
    predictions = predictor.predict([compound for _, compound, _ in valid], timer)
    for (index, _, structure), prediction in zip(valid, predictions, strict=True):
        if structure is not None and structure.warnings:
            prediction = replace(prediction, warnings=structure.warnings + prediction.warnings)
        results[index] = QueryPrediction(queries[index], prediction, structure)
    return [result for result in results if result is not None]
