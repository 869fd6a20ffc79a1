"""Readiness of the service."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.dependencies import NOT_LOADED_YET, ServiceDep
from app.core.results import HealthOut

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    responses=NOT_LOADED_YET,
)
async def health(service: ServiceDep) -> HealthOut:
    """Answer 200 with the model version once a model is loaded, 503 before."""
    predictor = service.predictor
    metadata = predictor.metadata
    return HealthOut(
        model_version=metadata.model_version,
        trained=metadata.trained,
        runtime=predictor.runtime,
        max_batch_size=service.settings.max_batch_size,
        experiment_model_version=predictor.experiment_version,
        density_model_version=(
            None
            if predictor.density_estimator is None
            else predictor.density_estimator.metadata.model_version
        ),
    )
