"""The FastAPI application: ``uvicorn app.main:app`` serves it."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

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
        _refuse(describe_settings_error(exc))


def _refuse(reason: str) -> NoReturn:
    """Exit with ``refusing to start: <reason>`` as the one line on standard error."""
    sys.exit(f"refusing to start: {one_line(reason)}")


def one_line(text: str) -> str:
    """A message on one line: a refusal is one log line, whatever its cause's text holds."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def _load_predictor(settings: Settings) -> Predictor:
    """Load and check the model, logging what was loaded and how long it took.

    Raises:
        StartupRefusedError: No temporary directory, or the model fails its checks.
    """
    started = time.perf_counter()
    check_temporary_directory()
    predictor = Predictor.load(settings.model_dir, settings.runtime)
    metadata = predictor.metadata
    logger.info(
        "loaded model %s (%s) from %s in %.1f s, running on %s",
        metadata.model_version,
        "trained" if metadata.trained else "UNTRAINED placeholder",
        settings.model_dir,
        time.perf_counter() - started,
        predictor.runtime,
    )
    return predictor


def create_app(settings: Settings | None = None, *, predictor: Predictor | None = None) -> FastAPI:
    """Build the application.

    Args:
        settings: Settings to use; read from the environment when omitted.
        predictor: The model, already loaded from ``settings.model_dir``; when omitted it
            is loaded when the application's lifespan starts.

    Returns:
        The application.
    """
    settings = settings or _settings_from_environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _configure_logging(settings.log_level)
        loaded = predictor
        if loaded is None:
            try:
                loaded = _load_predictor(settings)
            except StartupRefusedError as exc:
                logger.error("refusing to start: %s", one_line(str(exc)))
                raise
        structures = settings.structure_workers_pool()
        structures.warm_up()  # pymatgen loads in the workers while the service starts
        app.state.service = Service(predictor=loaded, settings=settings, structures=structures)
        # TensorFlow and pymatgen leave a few hundred thousand long-lived objects; a full
        # garbage collection walks them all (about 0.2 s on a 2-core machine) and stalls every
        # request in flight. Frozen, they are never walked again.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            app.state.service = None
            structures.close()

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


def _serve_from_environment() -> FastAPI:
    """The application ``uvicorn app.main:app`` serves, its model loaded and checked first.

    The model is loaded here, while uvicorn imports the application, rather than in the
    lifespan: uvicorn has printed nothing yet, so a refusal is the one line on standard error
    (in the lifespan it came between uvicorn's start and stop lines), and uvicorn listens
    only once the model is loaded either way.
    """
    settings = _settings_from_environment()
    _configure_logging(settings.log_level)
    try:
        predictor = _load_predictor(settings)
    except StartupRefusedError as exc:
        _refuse(str(exc))
    return create_app(settings, predictor=predictor)


app: FastAPI
"""The served application; built, its model loaded, on first access (by uvicorn), so that
importing this module (tests, `create_app`) loads no model."""


def __getattr__(name: str) -> FastAPI:
    """Build `app` on first access (PEP 562)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    served = _serve_from_environment()
    globals()["app"] = served
    return served
