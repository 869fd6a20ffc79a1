"""The loaded model's card: its version, training data coverage and metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response, status

from app.api.dependencies import ServiceDep
from app.api.errors import error_response
from app.api.schemas import ErrorDetail, ErrorResponse, ModelOut
from app.core.model_card import DENSITY_DIRNAME, EXPERIMENT_DIRNAME, MODEL_CARD_FILENAME

router = APIRouter(tags=["operations"])


@router.get(
    "/model",
    responses={503: {"model": ErrorResponse, "description": "No model is loaded yet."}},
)
async def model_card(service: ServiceDep) -> ModelOut:
    """Return the metadata and evaluation metrics of the loaded model and of its heads."""
    predictor = service.predictor
    density = predictor.density_estimator
    return ModelOut(
        **dict(predictor.metadata),
        experiment=predictor.experiment_metadata,
        density=None if density is None else density.metadata,
    )


@router.get(
    "/model/card",
    response_class=Response,
    responses={
        200: {
            "content": {"text/markdown": {}},
            "description": "MODEL_CARD.md: every model compared, calibration, error analysis; "
            "then the experiment head's and the density estimator's cards, when the model "
            "has them.",
        },
        404: {"model": ErrorResponse, "description": "The loaded model has no MODEL_CARD.md."},
        503: {"model": ErrorResponse, "description": "No model is loaded yet."},
    },
)
def model_card_markdown(service: ServiceDep) -> Response:
    """Return the loaded model's human-readable card (Markdown), as written by its training."""
    # A plain def: FastAPI runs it in its thread pool, so the file read never blocks the loop.
    model_dir = service.settings.model_dir
    cards = [_read_card(model_dir / MODEL_CARD_FILENAME)]
    heads = (
        (EXPERIMENT_DIRNAME, service.predictor.experiment_version is not None),
        (DENSITY_DIRNAME, service.predictor.density_estimator is not None),
    )
    for dirname, loaded in heads:
        head_card = _read_card(model_dir / dirname / MODEL_CARD_FILENAME) if loaded else None
        # A head's card follows as its own section, its headings one level down.
        cards.append(None if head_card is None else "#" + head_card.replace("\n#", "\n##"))
    found = [card.rstrip() for card in cards if card is not None]
    if not found:
        return error_response(
            status.HTTP_404_NOT_FOUND,
            ErrorDetail(
                type="model_card_missing",
                message=f"model {service.predictor.metadata.model_version} has no "
                f"{MODEL_CARD_FILENAME} (only trained models exported by "
                "`python -m model_training evaluate` have one); see GET /model",
            ),
        )
    return Response(content="\n\n".join(found) + "\n", media_type="text/markdown; charset=utf-8")


def _read_card(path: Path) -> str | None:
    try:
        # A card edited into another encoding is still shown, its stray bytes marked.
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


@router.head("/model", include_in_schema=False)
async def model_card_head(service: ServiceDep) -> Response:
    """Answer ``HEAD /model`` as ``GET`` does, without a body (503 until a model is loaded)."""
    del service  # resolving the dependency is the check
    return Response(status_code=status.HTTP_200_OK, media_type="application/json")


@router.head("/model/card", include_in_schema=False)
def model_card_markdown_head(service: ServiceDep) -> Response:
    """Answer ``HEAD /model/card`` with the status and headers of ``GET``, without a body."""
    full = model_card_markdown(service)
    headers = {k: v for k, v in full.headers.items() if k.lower() != "content-length"}
    return Response(status_code=full.status_code, headers=headers)
