"""Service configuration, read from ``MAGORDER_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "model"


class Settings(BaseSettings):
    """Settings of the magorder service.

    Attributes:
        model_dir: Directory of the exported model (``metadata.json`` + ``saved_model/``).
        max_batch_size: Most items accepted by ``POST /predict/batch``.
        log_level: Level of the service's own log lines.
    """

    model_config = SettingsConfigDict(env_prefix="MAGORDER_", env_file=".env", extra="ignore")

    model_dir: Path = DEFAULT_MODEL_DIR
    max_batch_size: int = Field(default=1000, ge=1, le=100_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@lru_cache
def get_settings() -> Settings:
    """Return the settings read from the environment, once per process."""
    return Settings()
