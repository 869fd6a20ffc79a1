"""``GET /``: one page to predict a formula or a structure, screen a CSV, read the model card.

Everything it loads is in ``static/`` and served by the app (no CDN, no build step): the
page, one stylesheet and one script, which call the same API as everyone else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The web page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


@router.head("/")
async def page_head() -> FileResponse:
    """``HEAD /`` as ``GET`` answers it, without a body."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


def add_web_page(app: FastAPI) -> None:
    """Serve the page at ``/`` and its files under ``/static``.

    Args:
        app: The application.
    """
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
