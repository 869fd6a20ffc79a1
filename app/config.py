"""Service configuration, read from ``MAGORDER_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.batch import BatchLimits
from app.core.features import DEFAULT_LIMITS, FormulaLimits
from app.core.model_runtime import ModelRuntime
from app.core.structures import DEFAULT_STRUCTURE_LIMITS, StructureLimits

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "model"


class Settings(BaseSettings):
    """Settings of the magorder service.

    Attributes:
        model_dir: Directory of the exported model (``metadata.json`` + ``saved_model/``).
        runtime: How the SavedModel is executed: ``auto`` (LiteRT when it reproduces the
            SavedModel's outputs, else TensorFlow), ``litert`` or ``tensorflow``.
        max_batch_size: Most items accepted by ``POST /predict/batch``.
        max_body_bytes: Largest request body accepted, in bytes.
        max_formula_length: Most characters in one formula.
        max_formula_elements: Most distinct elements in one formula.
        max_structure_sites: Most sites in one crystal structure.
        max_cif_images: Most site images a CIF's symmetry operations may generate (listed
            sites times operations), bounding pymatgen's work before it starts.
        body_timeout_s: Longest wait for the next chunk of a request body, in seconds.
        body_deadline_s: Longest time a whole request body may take to arrive, in seconds.
        header_timeout_s: Longest wait for a request's line and headers, in seconds, from
            when its connection opens or its first byte arrives.
        max_header_bytes: Most bytes of request line and headers together (431 beyond).
        max_connections: Most connections open at once (503 beyond).
        max_requests_in_flight: Most requests handled at once (503 beyond); idle
            connections do not count.
        log_level: Level of the service's own log lines.
    """

    model_config = SettingsConfigDict(env_prefix="MAGORDER_", env_file=".env", extra="ignore")

    model_dir: Path = DEFAULT_MODEL_DIR
    runtime: ModelRuntime = ModelRuntime.AUTO
    max_batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    max_formula_length: int = Field(default=DEFAULT_LIMITS.max_length, ge=1, le=10_000)
    max_formula_elements: int = Field(default=DEFAULT_LIMITS.max_elements, ge=1, le=118)
    max_structure_sites: int = Field(default=DEFAULT_STRUCTURE_LIMITS.max_sites, ge=1, le=100_000)
    max_cif_images: int = Field(default=DEFAULT_STRUCTURE_LIMITS.max_cif_images, ge=1, le=1_000_000)
    body_timeout_s: float = Field(default=10.0, gt=0, le=600)
    body_deadline_s: float = Field(default=60.0, gt=0, le=3600)
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1 << 20)
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    max_requests_in_flight: int = Field(default=256, ge=1, le=100_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @cached_property
    def formula_limits(self) -> FormulaLimits:
        """The formula bounds these settings ask for."""
        return FormulaLimits(
            max_length=self.max_formula_length, max_elements=self.max_formula_elements
        )

    @cached_property
    def batch_limits(self) -> BatchLimits:
        """The formula and structure bounds these settings ask for."""
        return BatchLimits(
            formula=self.formula_limits,
            structure=StructureLimits(
                max_bytes=self.max_body_bytes,
                max_sites=self.max_structure_sites,
                max_cif_images=self.max_cif_images,
            ),
        )


@lru_cache
def get_settings() -> Settings:
    """Return the settings read from the environment, once per process."""
    return Settings()


def describe_settings_error(error: ValidationError) -> str:
    """Name each ``MAGORDER_*`` variable a validation error is about, with what is wrong.

    Args:
        error: The error raised while reading `Settings`.

    Returns:
        One line, e.g. ``MAGORDER_MAX_BATCH_SIZE='abc': Input should be a valid integer``.
    """
    prefix = Settings.model_config.get("env_prefix", "")
    problems = []
    for problem in error.errors():
        name = f"{prefix}{'_'.join(str(part) for part in problem['loc'])}".upper()
        problems.append(f"{name}={problem.get('input')!r}: {problem['msg']}")
    return "; ".join(problems)
