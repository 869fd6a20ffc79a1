"""Typed dependencies that routes use to reach the loaded model and the settings.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool,
and that hand-over costs more than these functions do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.core.errors import ModelNotReadyError
from app.core.predictor import Predictor


async def get_app_settings(request: Request) -> Settings:
    """Return the settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_predictor(request: Request) -> Predictor:
    """Return the model loaded at startup.

    Raises:
        ModelNotReadyError: No model has been loaded (the lifespan has not run or failed).
    """
    predictor: Predictor | None = getattr(request.app.state, "predictor", None)
    if predictor is None:
        raise ModelNotReadyError("no model is loaded yet")
    return predictor


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
