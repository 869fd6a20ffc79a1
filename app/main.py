"""The FastAPI application: ``uvicorn app.main:app`` serves it."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError

from app import __version__
from app.api.body_limit import BodyLimitMiddleware
from app.api.dependencies import Service
from app.api.errors import register_error_handlers
from app.api.head_requests import HeadAsGetMiddleware
from app.api.routes import health, model_card, predict, structure, table
from app.api.startup_refusal import StartupRefusalMiddleware
from app.config import Settings, describe_settings_error, get_settings
from app.core.errors import StartupRefusedError
from app.core.model_runtime import check_temporary_directory
from app.core.predictor import Predictor
from app.web.page import add_web_page

logger = logging.getLogger(__name__)

_DESCRIPTION = """
Predicts the **magnetic ordering** of an inorganic compound (ferromagnetic `FM`, non-magnetic
`NM`, ferrimagnetic `FiM` or antiferromagnetic `AFM`) from its chemical formula and density,
with a model trained on Materials Project data. See `GET /model` for what the loaded model
is and how well it did on held-out compositions.
"""


def _configure_logging(level: str) -> None:
    app_logger = logging.getLogger("app")
    app_logger.setLevel(level)
    if not logging.getLogger().handlers and not app_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        app_logger.addHandler(handler)


def _settings_from_environment() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        # Raised while the server imports the app, before any logging is set up: one line on
        # standard error and a non-zero exit, not pydantic's traceback.
        sys.exit(f"refusing to start: {describe_settings_error(exc)}")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application.

    Args:
        settings: Settings to use; read from the environment when omitted.

    Returns:
        The application. Its model is loaded when its lifespan starts.
    """
    settings = settings or _settings_from_environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _configure_logging(settings.log_level)
        started = time.perf_counter()
        try:
            check_temporary_directory()
            predictor = Predictor.load(settings.model_dir, settings.runtime)
        except StartupRefusedError as exc:
            logger.error("refusing to start: %s", exc)
            raise
        metadata = predictor.metadata
        logger.info(
            "loaded model %s (%s) from %s in %.1f s, running on %s",
            metadata.model_version,
            "trained" if metadata.trained else "UNTRAINED placeholder",
            settings.model_dir,
            time.perf_counter() - started,
            predictor.runtime,
        )
        app.state.service = Service(predictor=predictor, settings=settings)
        # TensorFlow and pymatgen leave a few hundred thousand long-lived objects; a full
        # garbage collection walks them all (about 0.2 s on a 2-core machine) and stalls every
        # request in flight. Frozen, they are never walked again.
        gc.collect()
        gc.freeze()
        yield
        app.state.service = None

    app = FastAPIOffline(
        title="magorder",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.service = None
    register_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
        deadline_s=settings.body_deadline_s,
    )
    app.add_middleware(StartupRefusalMiddleware)
    app.add_middleware(HeadAsGetMiddleware)
    app.include_router(predict.router)
    app.include_router(structure.router)
    app.include_router(table.router)
    app.include_router(health.router)
    app.include_router(model_card.router)
    add_web_page(app)
    return app


app = create_app()
