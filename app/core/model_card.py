"""The model card: the metadata exported beside every SavedModel and checked when it is loaded."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.model_manifest import hash_directory as hash_directory
from app.core.model_manifest import write_manifest

METADATA_FILENAME = "metadata.json"
SAVED_MODEL_DIRNAME = "saved_model"
MODEL_CARD_FILENAME = "MODEL_CARD.md"
"""The human-readable report written beside a trained model (tables, plots, error analysis)."""
EXPERIMENT_DIRNAME = "experiment"
"""Subdirectory of a model directory holding its experiment head, when it has one."""
DENSITY_DIRNAME = "density"
"""Subdirectory of a model directory holding its density estimator, when it has one."""
HEAD_DIRNAMES: tuple[str, ...] = (EXPERIMENT_DIRNAME, DENSITY_DIRNAME)
"""The heads a model directory may hold beside the Materials Project head; each is trained
by its own command and kept when the Materials Project head is exported again."""
DENSITY_OUTPUT_COLUMNS: tuple[str, ...] = ("density_g_cm3",)
"""Columns of the density estimator's output: the estimated density in g/cm³."""
EXPERIMENT_OUTPUT_COLUMNS: tuple[str, ...] = (
    "p_fm_if_magnetic",
    "temperature_low_K",
    "temperature_median_K",
    "temperature_high_K",
)
"""Columns of the experiment head's output, in order: the probability that experiment finds
the compound FM (ferrimagnets included) rather than AFM if it orders magnetically, and the
low quantile, median and high quantile of its ordering temperature in kelvin."""


class MagneticOrdering(StrEnum):
    """The four magnetic orderings Materials Project assigns."""

    FM = "FM"
    NM = "NM"
    FiM = "FiM"
    AFM = "AFM"


class ExperimentalOrdering(StrEnum):
    """What experiment reports.

    Ferromagnetic (ferrimagnets included), antiferromagnetic, or non-magnetic (no ordering).
    """

    FM = "FM"
    AFM = "AFM"
    NM = "NM"


EXPERIMENT_CLASSES: tuple[ExperimentalOrdering, ...] = (
    ExperimentalOrdering.FM,
    ExperimentalOrdering.AFM,
)
"""The classes the experiment head itself tells apart, in label-index order (NM comes from
the Materials Project head)."""


class ConfidenceRule(BaseModel):
    """When a Materials Project answer is flagged as unsure, chosen on the validation rows.

    A model with this rule has a fifth output column: how far its members disagree (over the
    classes, the widest range of the members' probabilities of one class).

    Attributes:
        members: The ensemble members the spread is taken over.
        margin_below: An answer whose top probability leads the second by less than this is
            flagged: on the validation rows, such answers were wrong more often than right.
        margin_accuracy: The test accuracy of the answers flagged by the margin.
        spread_above: An answer whose members' spread exceeds this is flagged; None when no
            spread made the validation answers more often wrong than right.
        spread_accuracy: The test accuracy of the answers flagged by the spread.
        unflagged_accuracy: The test accuracy of the answers neither rule flags.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    members: tuple[str, ...] = Field(min_length=1)
    margin_below: float = Field(ge=0, le=1)
    margin_accuracy: float | None = Field(default=None, ge=0, le=1)
    spread_above: float | None = Field(default=None, ge=0, le=1)
    spread_accuracy: float | None = Field(default=None, ge=0, le=1)
    unflagged_accuracy: float | None = Field(default=None, ge=0, le=1)


class ModelMetadata(BaseModel):
    """What the service needs to know about an exported model, and what users see at /model.

    Attributes:
        model_version: Version of this trained model (not of the code).
        trained: False for a placeholder model whose probabilities mean nothing.
        description: One paragraph saying what the model is and how it was made.
        created_at: When the model was exported.
        feature_layout_version: The `app.core.features.FEATURE_LAYOUT_VERSION` it was trained on.
        n_features: Length of the input vector.
        classes: Class of each output column, in order.
        elements_seen: Symbols of the elements present in the training data.
        density_range: Smallest and largest density in the training data, g/cm³.
        metrics: Evaluation figures (macro-F1, per-class scores, confusion matrix, baselines).
        training_config: The configuration the model was trained with.
        data_snapshot_sha256: SHA-256 of the snapshot file the model was trained on.
        data_card: What cleaning did to that snapshot: rows read and kept, rows dropped by
            reason, class and label-source counts.
        tensorflow_version: TensorFlow version that exported the model.
        saved_model_sha256: Checksum of the ``saved_model/`` directory (see
            `hash_directory`), filled in by the export and verified at load; the directory's
            manifest (``SHA256SUMS``) covers this card and every other file beside it.
        confidence: When an answer is flagged as unsure; a model with it outputs its
            members' spread as a fifth column. None for a single network.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    metadata_version: Literal[1] = 1
    model_version: str = Field(min_length=1)
    trained: bool
    description: str
    created_at: datetime
    feature_layout_version: str
    n_features: int = Field(gt=0)
    classes: tuple[MagneticOrdering, ...]
    elements_seen: tuple[str, ...] = ()
    density_range: tuple[float, float] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_config: dict[str, Any] = Field(default_factory=dict)
    data_snapshot_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    data_card: dict[str, Any] = Field(default_factory=dict)
    tensorflow_version: str
    saved_model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    confidence: ConfidenceRule | None = None

    @model_validator(mode="after")
    def _density_range_is_physical(self) -> ModelMetadata:
        # The service warns outside this range: a reversed or non-positive one would warn
        # about every compound, or none.
        if self.density_range is not None:
            low, high = self.density_range
            if not 0 < low <= high:
                raise ValueError(
                    f"density_range {list(self.density_range)} is not 0 < low <= high (g/cm³)"
                )
        return self

    @property
    def n_outputs(self) -> int:
        """Columns of the SavedModel's output: the classes, and the spread with a rule."""
        return len(self.classes) + (self.confidence is not None)


class _HeadMetadata(BaseModel):
    """What the card of every head beside the Materials Project head holds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    metadata_version: Literal[1] = 1
    model_version: str = Field(min_length=1)
    description: str
    created_at: datetime
    feature_layout_version: str
    n_features: int = Field(gt=0)
    output_columns: tuple[str, ...]
    elements_seen: tuple[str, ...] = ()
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_config: dict[str, Any] = Field(default_factory=dict)
    data_snapshot_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    data_card: dict[str, Any] = Field(default_factory=dict)
    tensorflow_version: str
    saved_model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @property
    def n_outputs(self) -> int:
        """Columns of the SavedModel's output: one per output column."""
        return len(self.output_columns)


class ExperimentMetadata(_HeadMetadata):
    """The card of an experiment head (``experiment/metadata.json``), checked when it is loaded.

    Attributes:
        model_version: Version of this trained head.
        description: What the head is and how it was made.
        created_at: When it was exported.
        feature_layout_version: The feature layout it reads (it ignores the density slot).
        n_features: Length of the input vector.
        output_columns: Name of each output column, exactly `EXPERIMENT_OUTPUT_COLUMNS`.
        temperature_quantiles: The quantiles the low, median and high temperatures are.
        elements_seen: Symbols of the elements present in its training data.
        metrics: Evaluation figures (classification and temperature, with baselines).
        training_config: The configuration it was trained with.
        data_snapshot_sha256: SHA-256 of the experimental snapshot it was trained on.
        data_card: What cleaning did to that snapshot.
        sources: The literature databases it was trained on, to cite.
        tensorflow_version: TensorFlow version that exported it.
        saved_model_sha256: Checksum of its ``saved_model/`` directory, verified at load.
    """

    temperature_quantiles: tuple[float, float, float]
    sources: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _quantiles_are_ordered(self) -> ExperimentMetadata:
        # Answers report high - low as the interval's coverage: reversed or out-of-range
        # quantiles would make it negative or over 1.
        low, median, high = self.temperature_quantiles
        if not 0 < low < median < high < 1:
            raise ValueError(
                f"temperature_quantiles {list(self.temperature_quantiles)} are not "
                "0 < low < median < high < 1"
            )
        return self


class DensityMetadata(_HeadMetadata):
    """The card of a density estimator (``density/metadata.json``), checked when it is loaded.

    Attributes:
        model_version: Version of this trained estimator.
        description: What it is and how it was made.
        created_at: When it was exported.
        feature_layout_version: The feature layout it reads (it ignores the density slot).
        n_features: Length of the input vector.
        output_columns: Name of each output column, exactly `DENSITY_OUTPUT_COLUMNS`.
        test_mae: Its mean absolute error on the held-out test rows, g/cm³ (told to users
            whose density it estimates).
        elements_seen: Symbols of the elements present in its training data.
        metrics: Evaluation figures, with baselines.
        training_config: The configuration it was trained with.
        data_snapshot_sha256: SHA-256 of the snapshot it was trained on.
        data_card: What cleaning did to that snapshot.
        tensorflow_version: TensorFlow version that exported it.
        saved_model_sha256: Checksum of its ``saved_model/`` directory, verified at load.
    """

    test_mae: float = Field(ge=0)


def write_metadata(
    metadata: ModelMetadata | ExperimentMetadata | DensityMetadata, model_dir: Path
) -> Path:
    """Write the model card as ``metadata.json`` into a model directory, and seal it.

    The directory's manifest (`app.core.model_manifest`) is rewritten over its files as they
    are now, the card included: the export writes the card last, and whatever writes into
    the directory after it (the Markdown card, its plots) seals it again.

    Args:
        metadata: The model card.
        model_dir: The model directory (it must exist).

    Returns:
        The path of the written file.
    """
    path = model_dir / METADATA_FILENAME
    path.write_text(metadata.model_dump_json(indent=2) + "\n", encoding="utf-8")
    write_manifest(model_dir, HEAD_DIRNAMES if isinstance(metadata, ModelMetadata) else ())
    return path


Card = TypeVar("Card", ModelMetadata, ExperimentMetadata, DensityMetadata)
HeadCard = TypeVar("HeadCard", ExperimentMetadata, DensityMetadata)


def read_metadata(model_dir: Path, schema: type[Card] = ModelMetadata) -> Card:  # type: ignore[assignment]
    """Read and validate the model card of a model directory.

    Args:
        model_dir: The model directory.
        schema: The card's schema: `ModelMetadata`, or for a head `ExperimentMetadata` or
            `DensityMetadata`.

    Returns:
        The model card.

    Raises:
        OSError: The file cannot be read.
        pydantic.ValidationError: The file is not a valid model card.
    """
    text = (model_dir / METADATA_FILENAME).read_text(encoding="utf-8")
    return schema.model_validate_json(text)
