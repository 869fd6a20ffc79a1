"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.core.features import DEFAULT_LIMITS, MAX_DENSITY
from app.core.model_card import MagneticOrdering
from app.core.model_runtime import ModelRuntime
from app.core.predictor import Prediction

_FORMULA_DESCRIPTION = (
    "Neutral chemical formula, e.g. `Fe2O3`, `Ca(OH)2` or `Ba0.5Sr0.5TiO3`; it is reduced as "
    "Materials Project does (`Fe4O6` is `Fe2O3`). No charges or oxidation states. At most "
    f"{DEFAULT_LIMITS.max_length} characters and {DEFAULT_LIMITS.max_elements} distinct elements "
    "by default (`MAGORDER_MAX_FORMULA_LENGTH`, `MAGORDER_MAX_FORMULA_ELEMENTS`)."
)
_DENSITY_DESCRIPTION = f"Density in g/cm³: a number greater than 0 and at most {MAX_DENSITY:g}."


class CompoundIn(BaseModel):
    """One compound to predict."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"formula": "Fe2O3", "density": 5.24}]},
    )

    formula: str = Field(strict=True, description=_FORMULA_DESCRIPTION, examples=["Fe2O3"])
    density: float = Field(strict=True, description=_DENSITY_DESCRIPTION, examples=[5.24])


class PredictionOut(BaseModel):
    """The predicted magnetic ordering of one compound."""

    formula: str = Field(description="The formula as sent.")
    reduced_formula: str = Field(description="The reduced formula the features were built from.")
    prediction: MagneticOrdering = Field(description="The most probable ordering.")
    probabilities: dict[MagneticOrdering, float] = Field(
        description="Probability of each ordering; they sum to 1."
    )
    model_version: str
    warnings: list[str] = Field(description="What to know before trusting the prediction.")

    @classmethod
    def from_prediction(cls, prediction: Prediction, model_version: str, **fields: Any) -> Self:
        """Build the response body of a core prediction.

        Args:
            prediction: The core prediction.
            model_version: Version of the model that made it.
            **fields: Further fields of a subclass, such as a batch item's ``index``.

        Returns:
            The response body.
        """
        return cls(
            formula=prediction.compound.formula,
            reduced_formula=prediction.compound.reduced_formula,
            prediction=prediction.ordering,
            probabilities=prediction.probabilities,
            model_version=model_version,
            warnings=list(prediction.warnings),
            **fields,
        )


class ErrorDetail(BaseModel):
    """What went wrong, in words a client can show and a test can assert."""

    type: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="Human-readable explanation naming the problem.")
    field: str | None = Field(default=None, description="The input field at fault, if one.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="Each validation problem with its location, when several."
    )


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


_ITEM_SCHEMA = CompoundIn.model_json_schema()


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
        min_length=1, description="The compounds, each like the body of `POST /predict`."
    )


class BatchItemOk(PredictionOut):
    """A batch item that was predicted."""

    status: Literal["ok"] = "ok"
    index: int = Field(description="Position of the item in the request.")


class BatchItemError(BaseModel):
    """A batch item that could not be predicted."""

    status: Literal["error"] = "error"
    index: int = Field(description="Position of the item in the request.")
    formula: str | None = Field(
        default=None, description="The item's formula, if it had a string one."
    )
    error: ErrorDetail


class BatchOut(BaseModel):
    """Per-item results of a batch, in request order."""

    model_version: str
    results: list[Annotated[BatchItemOk | BatchItemError, Field(discriminator="status")]]


class HealthOut(BaseModel):
    """The service is ready to predict."""

    status: Literal["ok"] = "ok"
    model_version: str
    trained: bool = Field(description="False while the service runs an untrained placeholder.")
    runtime: ModelRuntime = Field(description="What executes the SavedModel: LiteRT or TensorFlow.")
    max_batch_size: int = Field(description="Most items `POST /predict/batch` accepts.")
