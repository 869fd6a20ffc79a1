"""The service plus endpoints that do no work: the floor of the stack, for ``bench.speed``.

Both take the same body as ``POST /predict``, parsed and validated by FastAPI into the same
model, through the same middleware, and answer a constant:

* ``POST /floor`` does nothing else: the issue's "bare endpoint", the stack's floor.
* ``POST /floor/same-signature`` also resolves the dependency ``/predict`` uses and answers
  a constant `PredictionOut` through the same response model, so that ``/predict`` minus it
  is the cost of predicting alone.

Served as ``uvicorn bench.floor_app:app`` next to the unmodified service, which answers the
``/predict`` requests of the benchmark; never part of the service. The two must not share one
app: FastAPI matches a request against the included routers in order, and every router it
passes costs the request time (about 8 µs in an in-process loop for a router of two routes,
docs/benchmarks.md). So the router of these endpoints takes the place the service gives the
router of ``/predict``: ``/floor`` is found exactly as fast as ``/predict`` is in the service,
and ``/floor/same-signature``, second in the router, after one more route match. In this app
``/predict`` sits one router further and must not be measured here.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from starlette.routing import BaseRoute, Match

from app.api.dependencies import ServiceDep
from app.api.schemas import CompoundIn, PredictionOut
from app.core.model_card import MagneticOrdering
from app.main import create_app

FLOOR_APP = "bench.floor_app:app"
"""This app, as uvicorn names it."""
FLOOR_PATH = "/floor"
SAME_SIGNATURE_PATH = "/floor/same-signature"

_CONSTANT = PredictionOut(
    formula="Fe2O3",
    reduced_formula="Fe2O3",
    prediction=MagneticOrdering.AFM,
    probabilities=dict.fromkeys(MagneticOrdering, 0.25),
    model_version="floor",
    warnings=[],
)

router = APIRouter(include_in_schema=False)


@router.post(FLOOR_PATH)
async def floor(compound: CompoundIn) -> dict[str, str]:
    """Accept a compound and do nothing with it."""
    return {"status": "ok"}


@router.post(SAME_SIGNATURE_PATH)
async def same_signature(compound: CompoundIn, service: ServiceDep) -> PredictionOut:
    """Accept a compound and the dependency of ``/predict``, and answer a constant."""
    return _CONSTANT


def _route_index(app_routes: Sequence[BaseRoute], path: str) -> int:
    scope = {"type": "http", "path": path, "method": "POST", "root_path": ""}
    for index, route in enumerate(app_routes):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return index
    raise LookupError(f"no route serves POST {path}")


app = create_app()
app.include_router(router)
routes = app.router.routes
routes.insert(_route_index(routes, "/predict"), routes.pop())
