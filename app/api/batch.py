"""Predicting a batch of request items, each failing alone: for the API and the command line."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.api.errors import domain_error_detail, validation_error_detail
from app.api.schemas import BatchItemError, BatchItemOk, BatchOut, CompoundIn
from app.core.errors import InvalidCompoundError
from app.core.features import FormulaLimits, ParsedCompound, parse_compound
from app.core.predictor import Predictor
from app.core.timing import StageTimer


def _formula_of(item: Any, max_length: int) -> str | None:
    formula = item.get("formula") if isinstance(item, dict) else None
    if not isinstance(formula, str):
        return None
    shown = formula if len(formula) <= max_length else formula[:max_length] + "…"
    # JSON may carry lone surrogates (\ud800), which no UTF-8 response can hold: echo them
    # escaped, or the whole batch would fail to serialise.
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def predict_items(
    items: list[Any],
    predictor: Predictor,
    limits: FormulaLimits,
    timer: StageTimer | None = None,
) -> BatchOut:
    """Validate and predict items shaped like the body of ``POST /predict``, in one model call.

    Args:
        items: Decoded JSON values; each should be ``{"formula": str, "density": number}``.
        predictor: The loaded model.
        limits: Bounds on formulas.
        timer: Receives the time spent in the ``featurize`` and ``model`` stages.

    Returns:
        One result per item, in order: a prediction, or the error that item alone has.
    """
    timer = timer or StageTimer()
    results: dict[int, BatchItemOk | BatchItemError] = {}
    valid: list[tuple[int, ParsedCompound]] = []
    with timer.stage("featurize"):
        for index, item in enumerate(items):
            try:
                compound = CompoundIn.model_validate(item)
                valid.append((index, parse_compound(compound.formula, compound.density, limits)))
            except (ValidationError, InvalidCompoundError) as exc:
                detail = (
                    validation_error_detail(exc.errors(), root="item")
                    if isinstance(exc, ValidationError)
                    else domain_error_detail(exc)
                )
                formula = _formula_of(item, limits.max_length)
                results[index] = BatchItemError(index=index, formula=formula, error=detail)
    model_version = predictor.metadata.model_version
    predictions = predictor.predict([compound for _, compound in valid], timer)
    for (index, _), prediction in zip(valid, predictions, strict=True):
        results[index] = BatchItemOk.from_prediction(
            prediction, model_version, predictor.experiment_version, index=index
        )
    return BatchOut(model_version=model_version, results=[results[i] for i in sorted(results)])
