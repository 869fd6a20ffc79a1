"""The typed dependency through which routes reach the loaded model and the settings.

One dependency, not one per object: FastAPI resolves each dependency of a route on every
request, and a second one cost ``POST /predict`` about 20 µs (docs/benchmarks.md). It is
``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, and that
hand-over costs more than the function does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from app.config import Settings
from app.core.errors import ModelNotReadyError
from app.core.predictor import Predictor
from app.core.results import ErrorResponse
from app.core.structure_workers import StructureWorkers

NOT_LOADED_YET: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "No model is loaded yet."}
}
"""The answer a route depending on `ServiceDep` gives before the model has loaded."""


@dataclass(frozen=True, slots=True)
class Service:
    """What the routes work with once the app has started.

    Attributes:
        predictor: The model loaded at startup.
        settings: The settings the app was built with.
        structures: The worker processes that read structure files.
    """

    predictor: Predictor
    settings: Settings
    structures: StructureWorkers


async def get_service(request: Request) -> Service:
    """Return the model loaded at startup with the app's settings.

    Raises:
        ModelNotReadyError: No model has been loaded (the lifespan has not run or failed).
    """
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ModelNotReadyError("no model is loaded yet")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
