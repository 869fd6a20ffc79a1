"""Service configuration, read from ``MAGORDER_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.backend import LocalBackend
from app.core.batch import BatchLimits
from app.core.features import DEFAULT_LIMITS, FormulaLimits
from app.core.model_runtime import ModelRuntime
from app.core.structure_workers import IsolationLimits, StructureWorkers
from app.core.structures import DEFAULT_STRUCTURE_LIMITS, StructureLimits

if TYPE_CHECKING:
    from app.core.predictor import Predictor

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
            connections do not count, nor does ``GET /health``.
        max_connections_per_client: Most connections one client address may hold open;
            beyond it a connection may only ask ``GET /health`` (503 otherwise). 0: no cap
            (behind a front door that caps per client itself, where every connection comes
            from the front door's address).
        write_timeout_s: Longest a response may wait for a client that does not read it,
            in seconds; past it the connection is dropped.
        structure_workers: Worker processes that read crystal structures, isolated from the
            server (pymatgen runs there, never in the server's process).
        structure_timeout_s: Longest wall-clock time one structure may take to read, in
            seconds; past it its worker is killed and replaced.
        structure_memory_mb: Memory one structure's reading may take, in MiB, on top of what
            a worker holds once pymatgen is loaded (its address-space limit).
        max_structure_requests: Most requests reading structures at once (503 beyond, with
            ``Retry-After``), so that the workers' queue stays short.
        structure_batch_deadline_s: Longest time the structures of one request may take to
            read together, in seconds; those not read by then fail alone.
        max_table_rows: Most rows ``POST /predict/table`` screens from one CSV.
        max_table_streams: Most ``POST /predict/table`` screenings at once (503 beyond).
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
    max_connections_per_client: int = Field(default=128, ge=0, le=100_000)
    write_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    structure_workers: int = Field(default=2, ge=1, le=256)
    structure_timeout_s: float = Field(default=10.0, gt=0, le=600)
    structure_memory_mb: int = Field(default=1024, ge=64, le=1 << 20)
    max_structure_requests: int = Field(default=8, ge=1, le=10_000)
    structure_batch_deadline_s: float = Field(default=120.0, gt=0, le=3600)
    max_table_rows: int = Field(default=100_000, ge=1, le=100_000_000)
    max_table_streams: int = Field(default=4, ge=1, le=1000)
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

    @cached_property
    def isolation(self) -> IsolationLimits:
        """How these settings ask for structure files to be read in worker processes."""
        return IsolationLimits(
            workers=self.structure_workers,
            timeout_s=self.structure_timeout_s,
            memory_mb=self.structure_memory_mb,
            max_requests=self.max_structure_requests,
            deadline_s=self.structure_batch_deadline_s,
        )

    def structure_workers_pool(self) -> StructureWorkers:
        """New worker processes for structure files, bounded as these settings ask."""
        return StructureWorkers(self.isolation, self.batch_limits.structure, self.formula_limits)

    def local_backend(
        self,
        predictor: Predictor,
        *,
        batch_size: int | None = None,
        structures: StructureWorkers | None = None,
    ) -> LocalBackend:
        """A backend answering with ``predictor`` in-process, bounded as these settings ask.

        Args:
            predictor: The loaded model.
            batch_size: Queries per model call; ``max_batch_size`` when None.
            structures: The worker processes that read structure files; new ones
                (`structure_workers_pool`) when None.

        Returns:
            The backend.
        """
        return LocalBackend(
            predictor,
            self.batch_limits,
            self.max_batch_size if batch_size is None else batch_size,
            structures=self.structure_workers_pool() if structures is None else structures,
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
