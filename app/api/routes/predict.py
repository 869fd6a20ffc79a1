"""Prediction endpoints: one compound, or a batch in one model call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from app.api.batch import predict_items
from app.api.dependencies import ServiceDep
from app.api.json_body import JSONBodyRoute
from app.api.schemas import BatchIn, CompoundIn
from app.core.errors import BatchTooLargeError
from app.core.features import parse_compound
from app.core.results import BatchOut, ErrorResponse, PredictionOut
from app.core.timing import StageTimer

router = APIRouter(tags=["prediction"], route_class=JSONBodyRoute)

SERVER_TIMING = "Server-Timing"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not UTF-8."},
    408: {"model": ErrorResponse, "description": "The body was sent too slowly."},
    413: {"model": ErrorResponse, "description": "The body is larger than allowed."},
    415: {"model": ErrorResponse, "description": "The body is not declared as JSON."},
    422: {
        "model": ErrorResponse,
        "description": "The input is invalid or repeats a JSON key; the message says why.",
    },
    503: {"model": ErrorResponse, "description": "No model is loaded."},
}


def server_timing(timer: StageTimer) -> str:
    """The ``Server-Timing`` header value of a request's stages, in milliseconds."""
    return ", ".join(f"{name};dur={seconds * 1e3:.3f}" for name, seconds in timer.seconds.items())


@router.post("/predict", responses=ERROR_RESPONSES)
async def predict(compound: CompoundIn, service: ServiceDep) -> PredictionOut:
    """Predict the magnetic ordering of one compound from its formula and density.

    Without a density, the density estimator's estimate from the composition is used, and
    the answer says so (`density_source`, and a warning).
    """
    # On the event loop, not a worker thread: a parse and one model call take less time than
    # handing the request to a thread and back (measured in docs/benchmarks.md).
    parsed = parse_compound(compound.formula, compound.density, service.settings.formula_limits)
    predictor = service.predictor
    (prediction,) = predictor.predict([parsed])
    return PredictionOut.from_prediction(
        prediction, predictor.metadata.model_version, predictor.experiment_version
    )


@router.post("/predict/batch", responses=ERROR_RESPONSES, response_model_exclude_none=True)
async def predict_batch(batch: BatchIn, service: ServiceDep, response: Response) -> BatchOut:
    """Predict many compounds in one model call; a bad item gets its own error, not the batch.

    The ``Server-Timing`` header gives the milliseconds spent validating items and building
    features (``featurize``) and running the model (``model``).
    """
    settings = service.settings
    if len(batch.items) > settings.max_batch_size:
        raise BatchTooLargeError(
            f"batch has {len(batch.items)} items; at most {settings.max_batch_size} allowed"
        )
    timer = StageTimer()
    # A worker thread: a thousand parses would hold the event loop for tens of milliseconds.
    out = await run_in_threadpool(
        predict_items,
        batch.items,
        service.predictor,
        settings.batch_limits,
        timer,
        structures=service.structures,
    )
    response.headers[SERVER_TIMING] = server_timing(timer)
    return out
