"""The HTTP edge of batches: raw JSON items checked one by one, then predicted by the core."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from app.api.errors import validation_error_detail
from app.api.schemas import BatchItemIn, StructureBatchItemIn
from app.core.batch import MAX_ID_LENGTH, BatchLimits, CompoundQuery, predict_queries
from app.core.predictor import Predictor
from app.core.results import BatchItemError, BatchOut, BatchResult, batch_result, echoed
from app.core.structure_workers import StructureWorkers
from app.core.timing import StageTimer


def _query(item: BatchItemIn | StructureBatchItemIn) -> CompoundQuery:
    if isinstance(item, StructureBatchItemIn):
        return CompoundQuery(
            structure=item.structure, structure_format=item.structure_format, id=item.id
        )
    return CompoundQuery(formula=item.formula, density=item.density, id=item.id)


def _text_of(item: Any, key: str, max_length: int) -> str | None:
    value = item.get(key) if isinstance(item, dict) else None
    return echoed(value, max_length) if isinstance(value, str) else None


def predict_items(
    items: list[Any],
    predictor: Predictor,
    limits: BatchLimits,
    timer: StageTimer | None = None,
    *,
    structures: StructureWorkers,
    schema: type[BatchItemIn | StructureBatchItemIn] = BatchItemIn,
) -> BatchOut:
    """Validate raw batch items and predict those that pass, in one model call.

    Args:
        items: Decoded JSON values, each shaped like ``schema``.
        predictor: The loaded model.
        limits: Bounds on formulas and structures.
        timer: Receives the time spent in the ``featurize`` and ``model`` stages.
        structures: The worker processes that read structure items.
        schema: What an item is: a formula (`BatchItemIn`) or a structure.

    Returns:
        One result per item, in order: a prediction, or the error that item alone has.
    """
    results: dict[int, BatchResult] = {}
    queries: list[tuple[int, CompoundQuery]] = []
    for index, item in enumerate(items):
        try:
            parsed: BaseModel = schema.model_validate(item)
        except ValidationError as exc:
            results[index] = BatchItemError(
                index=index,
                id=_text_of(item, "id", MAX_ID_LENGTH),
                formula=_text_of(item, "formula", limits.formula.max_length),
                error=validation_error_detail(exc.errors(), root="item"),
            )
            continue
        assert isinstance(parsed, BatchItemIn | StructureBatchItemIn)  # noqa: S101
        queries.append((index, _query(parsed)))
    outcomes = predict_queries(
        [query for _, query in queries], predictor, limits, timer, structures=structures
    )
    model_version = predictor.metadata.model_version
    for (index, _), outcome in zip(queries, outcomes, strict=True):
        results[index] = batch_result(
            outcome,
            index=index,
            model_version=model_version,
            experiment_version=predictor.experiment_version,
            max_formula_length=limits.formula.max_length,
        )
    return BatchOut(model_version=model_version, results=[results[i] for i in sorted(results)])
