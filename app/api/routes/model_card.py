"""The loaded model's card: its version, training data coverage and metrics."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.dependencies import ServiceDep
from app.api.schemas import ErrorResponse
from app.core.model_card import ModelMetadata

router = APIRouter(tags=["operations"])


@router.get(
    "/model",
    responses={503: {"model": ErrorResponse, "description": "No model is loaded yet."}},
)
async def model_card(service: ServiceDep) -> ModelMetadata:
    """Return the metadata and evaluation metrics of the loaded model."""
    return service.predictor.metadata
