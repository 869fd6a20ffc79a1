"""The loaded model's card: its version, training data coverage and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.dependencies import ServiceDep
from app.api.errors import error_response
from app.api.schemas import ErrorDetail, ErrorResponse
from app.core.model_card import MODEL_CARD_FILENAME, ModelMetadata

router = APIRouter(tags=["operations"])


@router.get(
    "/model",
    responses={503: {"model": ErrorResponse, "description": "No model is loaded yet."}},
)
async def model_card(service: ServiceDep) -> ModelMetadata:
    """Return the metadata and evaluation metrics of the loaded model."""
    return service.predictor.metadata


@router.get(
    "/model/card",
    response_class=Response,
    responses={
        200: {
            "content": {"text/markdown": {}},
            "description": "MODEL_CARD.md: every model compared, calibration, error analysis.",
        },
        404: {"model": ErrorResponse, "description": "The loaded model has no MODEL_CARD.md."},
        503: {"model": ErrorResponse, "description": "No model is loaded yet."},
    },
)
def model_card_markdown(service: ServiceDep) -> Response:
    """Return the loaded model's human-readable card (Markdown), as written by its training."""
    # A plain def: FastAPI runs it in its thread pool, so the file read never blocks the loop.
    path = service.settings.model_dir / MODEL_CARD_FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return error_response(
            status.HTTP_404_NOT_FOUND,
            ErrorDetail(
                type="model_card_missing",
                message=f"model {service.predictor.metadata.model_version} has no "
                f"{MODEL_CARD_FILENAME} (only trained models exported by "
                "`python -m model_training evaluate` have one); see GET /model",
            ),
        )
    return Response(content=text, media_type="text/markdown; charset=utf-8")
