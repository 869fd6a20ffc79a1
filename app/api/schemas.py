"""The HTTP API's own bodies: the requests it reads, and the model card ``GET /model`` answers.

What a prediction answers is the core's (`app.core.results`), shared with the command line
and the Python API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.core.batch import MAX_ID_LENGTH
from app.core.features import DEFAULT_LIMITS, MAX_DENSITY
from app.core.model_card import DensityMetadata, ExperimentMetadata, ModelMetadata
from app.core.structures import DEFAULT_STRUCTURE_LIMITS, StructureFormat

_FORMULA_DESCRIPTION = (
    "Neutral chemical formula, e.g. `Fe2O3`, `Ca(OH)2` or `Ba0.5Sr0.5TiO3`; it is reduced as "
    "Materials Project does (`Fe4O6` is `Fe2O3`). No charges or oxidation states. At most "
    f"{DEFAULT_LIMITS.max_length} characters and {DEFAULT_LIMITS.max_elements} distinct elements "
    "by default (`MAGORDER_MAX_FORMULA_LENGTH`, `MAGORDER_MAX_FORMULA_ELEMENTS`)."
)
_DENSITY_DESCRIPTION = (
    f"Density in g/cm³: a number greater than 0 and at most {MAX_DENSITY:g}. Leave it out "
    "(or send null) when it is not known: it is then estimated from the composition, and the "
    "answer says so (`density_source: estimated`, with a warning)."
)
_ID_DESCRIPTION = (
    f"Your name for the item, echoed in its result (at most {MAX_ID_LENGTH} characters)."
)
_STRUCTURE_DESCRIPTION = (
    "A crystal structure file's text: CIF, POSCAR/CONTCAR, pymatgen's Structure JSON or XSF. "
    "One structure per item; at most "
    f"{DEFAULT_STRUCTURE_LIMITS.max_sites} sites by default (`MAGORDER_MAX_STRUCTURE_SITES`)."
)


class CompoundIn(BaseModel):
    """One compound to predict."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"formula": "Fe2O3", "density": 5.24}]},
    )

    formula: str = Field(strict=True, description=_FORMULA_DESCRIPTION, examples=["Fe2O3"])
    density: float | None = Field(
        default=None, strict=True, description=_DENSITY_DESCRIPTION, examples=[5.24]
    )


class BatchItemIn(CompoundIn):
    """One compound of a batch."""

    id: str | None = Field(
        default=None, strict=True, max_length=MAX_ID_LENGTH, description=_ID_DESCRIPTION
    )


class StructureIn(BaseModel):
    """One crystal structure to predict, as text."""

    model_config = ConfigDict(extra="forbid")

    structure: str = Field(strict=True, description=_STRUCTURE_DESCRIPTION)
    # Literal, not the enum: batch items' schema is inlined, and cannot hold a $defs reference.
    format: Literal["cif", "poscar", "json", "xsf"] | None = Field(
        default=None, description="The structure's format; detected from the text when omitted."
    )

    @property
    def structure_format(self) -> StructureFormat | None:
        """The format as the core names it."""
        return None if self.format is None else StructureFormat(self.format)


class StructureBatchItemIn(StructureIn):
    """One crystal structure of a batch."""

    id: str | None = Field(
        default=None, strict=True, max_length=MAX_ID_LENGTH, description=_ID_DESCRIPTION
    )


_ITEM_SCHEMA = BatchItemIn.model_json_schema()
_STRUCTURE_ITEM_SCHEMA = StructureBatchItemIn.model_json_schema()


class BatchIn(BaseModel):
    """Many compounds to predict in one call."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"formula": "Fe2O3", "density": 5.24},
                        {"formula": "NaCl", "density": 2.17},
                    ]
                }
            ]
        },
    )

    # Items are validated one by one in the route, so that one bad item fails alone.
    items: list[Annotated[Any, WithJsonSchema(_ITEM_SCHEMA)]] = Field(
        min_length=1,
        description="The compounds, each like the body of `POST /predict`, with an optional `id`.",
    )


class StructureBatchIn(BaseModel):
    """Many crystal structures to predict in one call."""

    model_config = ConfigDict(extra="forbid")

    items: list[Annotated[Any, WithJsonSchema(_STRUCTURE_ITEM_SCHEMA)]] = Field(
        min_length=1,
        description="The structures, each like the JSON body of `POST /predict/structure`, "
        "with an optional `id`.",
    )


class ModelOut(ModelMetadata):
    """The loaded model's card, with its experiment head's and its density estimator's."""

    experiment: ExperimentMetadata | None = Field(
        default=None, description="The experiment head's card, or null when there is none."
    )
    density: DensityMetadata | None = Field(
        default=None, description="The density estimator's card, or null when there is none."
    )
