"""The service plus endpoints that do no work: the floor of the stack, for ``bench.speed``.

Both take the same body as ``POST /predict``, parsed and validated by FastAPI into the same
model, through the same middleware, and answer a constant:

* ``POST /floor`` does nothing else: the issue's "bare endpoint", the stack's floor.
* ``POST /floor/same-signature`` also resolves the dependency ``/predict`` uses and answers
  a constant `PredictionOut` through the same response model, so that ``/predict`` minus it
  is the cost of predicting alone.

Both read the body as the service's routes do (`JSONBodyRoute`). Served as
``uvicorn bench.floor_app:app`` next to the unmodified service, which answers the ``/predict``
requests of the benchmark; never part of the service. Their routes come first in this app's
route list, so they are found no later than ``/predict`` is in the service: FastAPI tries the
routes in order, and each one tried costs a request time.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.dependencies import ServiceDep
from app.api.json_body import JSONBodyRoute
from app.api.schemas import CompoundIn
from app.core.features import DensitySource
from app.core.model_card import MagneticOrdering
from app.core.results import PredictionOut
from app.main import create_app

FLOOR_APP = "bench.floor_app:app"
"""This app, as uvicorn names it."""
FLOOR_PATH = "/floor"
SAME_SIGNATURE_PATH = "/floor/same-signature"

_CONSTANT = PredictionOut(
    formula="Fe2O3",
    reduced_formula="Fe2O3",
    density=5.24,
    density_source=DensitySource.GIVEN,
    prediction=MagneticOrdering.AFM,
    probabilities=dict.fromkeys(MagneticOrdering, 0.25),
    magnetic_probability=0.75,
    model_version="floor",
    warnings=[],
)

router = APIRouter(include_in_schema=False, route_class=JSONBodyRoute)


@router.post(FLOOR_PATH)
async def floor(compound: CompoundIn) -> dict[str, str]:
    """Accept a compound and do nothing with it."""
    return {"status": "ok"}


@router.post(SAME_SIGNATURE_PATH)
async def same_signature(compound: CompoundIn, service: ServiceDep) -> PredictionOut:
    """Accept a compound and the dependency of ``/predict``, and answer a constant."""
    return _CONSTANT


app = create_app()
app.router.routes[:0] = router.routes
