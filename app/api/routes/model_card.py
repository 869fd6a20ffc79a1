"""The loaded model's card: its version, training data coverage and metrics."""

from __future__ import annotations

import html
import re
import stat
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse, HTMLResponse
from markdown_it import MarkdownIt

from app.api.dependencies import NOT_LOADED_YET, Service, ServiceDep
from app.api.errors import error_response
from app.api.schemas import ModelOut
from app.core.model_card import (
    DENSITY_DIRNAME,
    EXPERIMENT_DIRNAME,
    HEAD_DIRNAMES,
    MODEL_CARD_FILENAME,
)
from app.core.results import ErrorDetail, ErrorResponse

router = APIRouter(tags=["operations"])


@router.get(
    "/model",
    responses=NOT_LOADED_YET,
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
        **NOT_LOADED_YET,
    },
)
def model_card_markdown(service: ServiceDep) -> Response:
    """Return the loaded model's human-readable card (Markdown), as written by its training."""
    # A plain def: FastAPI runs it in its thread pool, so the file read never blocks the loop.
    card = combined_card(service)
    if card is None:
        return error_response(
            status.HTTP_404_NOT_FOUND,
            ErrorDetail(
                type="model_card_missing",
                message=f"model {service.predictor.metadata.model_version} has no "
                f"{MODEL_CARD_FILENAME} (only trained models exported by "
                "`python -m model_training evaluate` have one); see GET /model",
            ),
        )
    return Response(content=card, media_type="text/markdown; charset=utf-8")


_RELATIVE_IMAGE = re.compile(r"\]\((?![a-z]+:|/)([^)\s]+)\)")


def combined_card(service: Service) -> str | None:
    """The MP head's card, then each loaded head's as its own section; None without any.

    Image links stay relative to ``/model/`` (where `model_files` serves them), so a head's
    are prefixed with its directory.
    """
    model_dir = service.settings.model_dir
    cards = [_read_card(model_dir / MODEL_CARD_FILENAME)]
    heads = (
        (EXPERIMENT_DIRNAME, service.predictor.experiment_version is not None),
        (DENSITY_DIRNAME, service.predictor.density_estimator is not None),
    )
    for dirname, loaded in heads:
        head_card = _read_card(model_dir / dirname / MODEL_CARD_FILENAME) if loaded else None
        if head_card is not None:
            # A head's card follows as its own section, its headings one level down.
            head_card = "#" + head_card.replace("\n#", "\n##")
            cards.append(_RELATIVE_IMAGE.sub(rf"]({dirname}/\1)", head_card))
    found = [card.rstrip() for card in cards if card is not None]
    return "\n\n".join(found) + "\n" if found else None


def _read_card(path: Path) -> str | None:
    try:
        # A card edited into another encoding is still shown, its stray bytes marked.
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


@router.get("/model/card.html", response_class=HTMLResponse, include_in_schema=False)
def model_card_html(service: ServiceDep) -> Response:
    """The model card as an HTML page, its plots shown (the web page links here)."""
    card = combined_card(service)
    if card is None:
        return model_card_markdown(service)  # the same 404
    version = html.escape(service.predictor.metadata.model_version)
    body = _markdown().render(card)
    page = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>magorder model card {version}</title>\n"
        '<link rel="stylesheet" href="/static/style.css">\n</head>\n'
        '<body class="card">\n<p><a href="/">← magorder</a></p>\n<main>\n'
        f"{body}</main>\n</body>\n</html>\n"
    )
    return HTMLResponse(page)


@cache
def _markdown() -> MarkdownIt:
    # CommonMark with tables, raw HTML off: the card is the model's, but shown as text only.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


_MODEL_FILE = re.compile(r"[A-Za-z0-9_-]{1,100}\.png")
"""A plot's name; bounded, so that a long name is a 404 before it reaches the file system."""


@router.get("/model/{name}", include_in_schema=False)
def model_file(name: str, service: ServiceDep) -> Response:
    """A plot of the model card (the links in ``GET /model/card`` point here)."""
    return _model_file(service.settings.model_dir, name)


@router.get("/model/{head}/{name}", include_in_schema=False)
def head_file(head: str, name: str, service: ServiceDep) -> Response:
    """A plot of a head's card (``/model/experiment/temperature_parity.png``)."""
    head_dir = service.settings.model_dir / head
    # A head directory that is a symbolic link could lead anywhere (the load refuses one).
    if head not in HEAD_DIRNAMES or head_dir.is_symlink():
        return _not_found(f"{head}/{name}")
    return _model_file(head_dir, name)


def _not_found(name: str) -> Response:
    return error_response(
        status.HTTP_404_NOT_FOUND,
        ErrorDetail(type="not_found", message=f"the model has no file {name!r}"),
    )


def _model_file(directory: Path, name: str) -> Response:
    path = _regular_file_in(directory, name) if _MODEL_FILE.fullmatch(name) else None
    if path is None:
        return _not_found(name)
    return FileResponse(path, media_type="image/png")


def _regular_file_in(directory: Path, name: str) -> Path | None:
    """``directory / name`` when it is a regular file directly inside it, else None.

    ``name`` has no ``/`` (`_MODEL_FILE`), and a symbolic link is not followed: one could
    point outside the model (at /etc/passwd). An error from the file system (a name too
    long, a permission) means not found, never a 500.
    """
    path = directory / name
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
    except OSError:
        return None
    return path
