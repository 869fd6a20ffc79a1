"""What a prediction gives back: the result types every head of the service shares.

The HTTP routes answer with them, the Python API and the command line build their tables from
them, and a remote backend parses a server's answers into them: one shape whoever asks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field

from app.core.batch import MAX_ID_LENGTH, QueryFailure, QueryPrediction, QueryResult
from app.core.errors import MagorderError
from app.core.experiment import ExperimentPrediction, TransitionKind
from app.core.features import DEFAULT_LIMITS, DensitySource
from app.core.model_card import ExperimentalOrdering, MagneticOrdering
from app.core.model_runtime import ModelRuntime
from app.core.predictor import Prediction
from app.core.structures import ParsedStructure, StructureFormat


class OrderingTemperatureOut(BaseModel):
    """The predicted temperature below which the compound orders magnetically."""

    kind: TransitionKind = Field(
        description="`curie` (T_C) when FM is the more probable magnetic answer, `neel` (T_N) "
        "when AFM is."
    )
    kelvin: float = Field(description="The median prediction, K.")
    low_kelvin: float = Field(description="The low end of the interval (a quantile), K.")
    high_kelvin: float = Field(description="The high end of the interval (a quantile), K.")
    interval: float = Field(
        description="Share of compounds whose temperature the interval is made to hold: the "
        "gap between its two quantiles (0.8 for the 10 % and 90 % quantiles)."
    )


class ExperimentOut(BaseModel):
    """What experiment would find: the experiment head with the MP head's P(NM)."""

    prediction: ExperimentalOrdering = Field(description="The most probable of FM, AFM, NM.")
    probabilities: dict[ExperimentalOrdering, float] = Field(
        description="P(FM) (ferrimagnets included), P(AFM), P(NM); they sum to 1. P(NM) is the "
        "Materials Project head's (0 for compounds of the lanthanides whose 4f moments MP "
        "freezes: Pr, Nd, Pm, Sm, Tb, Dy, Ho, Er, Tm, Yb); the rest is split by "
        "P(FM | magnetic)."
    )
    p_fm_if_magnetic: float = Field(
        description="The experiment head's probability that the compound is FM (or "
        "ferrimagnetic) rather than AFM, if it orders magnetically."
    )
    ordering_temperature: OrderingTemperatureOut
    model_version: str = Field(description="Version of the experiment head.")
    warnings: list[str] = Field(description="What to know before trusting this answer.")

    @classmethod
    def from_prediction(cls, prediction: ExperimentPrediction, model_version: str) -> Self:
        """Build the response body of a core experimental prediction."""
        temperature = prediction.temperature
        low, _, high = temperature.quantiles
        return cls(
            prediction=prediction.ordering,
            probabilities=prediction.probabilities,
            p_fm_if_magnetic=prediction.p_fm_if_magnetic,
            ordering_temperature=OrderingTemperatureOut(
                kind=temperature.kind,
                kelvin=temperature.median_k,
                low_kelvin=temperature.low_k,
                high_kelvin=temperature.high_k,
                interval=round(high - low, 6),
            ),
            model_version=model_version,
            warnings=list(prediction.warnings),
        )


class StructureOut(BaseModel):
    """What was read from a crystal structure."""

    format: StructureFormat = Field(description="The format it was read as.")
    n_sites: int = Field(description="Sites in its cell.")
    is_ordered: bool = Field(
        description="False when some site is partially occupied: the prediction is for the "
        "average (fractional) composition."
    )

    @classmethod
    def from_parsed(cls, structure: ParsedStructure) -> Self:
        """Describe a structure the core read."""
        return cls(
            format=structure.format, n_sites=structure.n_sites, is_ordered=structure.is_ordered
        )


class PredictionOut(BaseModel):
    """The predicted magnetic ordering of one compound."""

    formula: str = Field(
        description="The formula as sent (for a structure, the formula of its cell)."
    )
    reduced_formula: str = Field(description="The reduced formula the features were built from.")
    density: float = Field(description="The density the prediction used, g/cm³.")
    density_source: DensitySource = Field(
        description="Where that density came from: `given` in the request, computed from the "
        "`structure`, or `estimated` from the composition by the density estimator."
    )
    prediction: MagneticOrdering = Field(description="The most probable ordering.")
    probabilities: dict[MagneticOrdering, float] = Field(
        description="Probability of each ordering; they sum to 1."
    )
    magnetic_probability: float = Field(
        description="The probability that MP finds the compound magnetic at all (FM, FiM or "
        "AFM): 1 - P(NM), the model's most reliable figure."
    )
    member_spread: float | None = Field(
        default=None,
        description="How far the model's ensemble members disagree: over the classes, the "
        "widest range of their probabilities of one class (0: they agree). A warning says "
        "when it is high enough to doubt the answer; null for a model without members.",
    )
    model_version: str
    warnings: list[str] = Field(description="What to know before trusting the prediction.")
    experiment: ExperimentOut | None = Field(
        default=None,
        description="What experiment would find (FM, AFM or NM, and the ordering temperature), "
        "when the model has an experiment head; `prediction` and `probabilities` above are "
        "Materials Project's DFT label.",
    )

    @classmethod
    def from_prediction(
        cls,
        prediction: Prediction,
        model_version: str,
        experiment_version: str | None = None,
        **fields: Any,
    ) -> Self:
        """Build the response body of a core prediction.

        Args:
            prediction: The core prediction.
            model_version: Version of the model that made it.
            experiment_version: Version of its experiment head, if it has one.
            **fields: Further fields of a subclass, such as a batch item's ``index``.

        Returns:
            The response body.
        """
        experiment = (
            None
            if prediction.experiment is None or experiment_version is None
            else ExperimentOut.from_prediction(prediction.experiment, experiment_version)
        )
        return cls(
            formula=prediction.compound.formula,
            reduced_formula=prediction.compound.reduced_formula,
            density=prediction.compound.density,
            density_source=prediction.compound.density_source,
            prediction=prediction.ordering,
            probabilities=prediction.probabilities,
            magnetic_probability=round(prediction.magnetic_probability, 6),
            member_spread=prediction.member_spread,
            model_version=model_version,
            warnings=list(prediction.warnings),
            experiment=experiment,
            **fields,
        )


class StructurePredictionOut(PredictionOut):
    """The predicted magnetic ordering of a crystal structure's compound."""

    structure: StructureOut


class ErrorDetail(BaseModel):
    """What went wrong, in words a client can show and a test can assert."""

    type: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="Human-readable explanation naming the problem.")
    field: str | None = Field(default=None, description="The input field at fault, if one.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="Each validation problem with its location, when several."
    )

    @classmethod
    def from_error(cls, exc: MagorderError) -> Self:
        """Describe a domain error for a client."""
        return cls(type=exc.code, message=str(exc), field=getattr(exc, "field", None) or None)


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


_ItemIndex = Annotated[int, Field(description="Position of the item in the request.")]
_ItemId = Annotated[str | None, Field(description="The item's `id`, when it had one.")]
_ECHOED_FORMULA = "The item's formula, if it had a string one."


class BatchItemOk(PredictionOut):
    """A batch item that was predicted."""

    status: Literal["ok"] = "ok"
    index: _ItemIndex
    id: _ItemId = None
    structure: StructureOut | None = Field(
        default=None, description="What was read from the item's structure, when it was one."
    )


class BatchItemError(BaseModel):
    """A batch item that could not be predicted."""

    status: Literal["error"] = "error"
    index: _ItemIndex
    id: _ItemId = None
    formula: str | None = Field(None, description=_ECHOED_FORMULA)
    error: ErrorDetail


class BatchOut(BaseModel):
    """Per-item results of a batch, in request order."""

    model_version: str
    results: list[Annotated[BatchItemOk | BatchItemError, Field(discriminator="status")]]


BatchResult = BatchItemOk | BatchItemError


def echoed(text: str, max_length: int) -> str:
    """Text from a request, cut to ``max_length`` and safe to put in a UTF-8 response.

    JSON may carry lone surrogates (U+D800), which no UTF-8 response can hold: they are
    echoed escaped, or the whole response would fail to serialise.
    """
    shown = text if len(text) <= max_length else text[:max_length] + "…"
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def batch_result(
    result: QueryResult,
    *,
    index: int,
    model_version: str,
    experiment_version: str | None,
    max_formula_length: int = DEFAULT_LIMITS.max_length,
) -> BatchResult:
    """The response item of one core batch result.

    Args:
        result: The core's result for the item.
        index: The item's position in the request.
        model_version: Version of the model that predicted.
        experiment_version: Version of its experiment head, if it has one.
        max_formula_length: Formulas of failed items are echoed cut to this length.

    Returns:
        The item's prediction, or its error.
    """
    query = result.query
    item_id = None if query.id is None else echoed(query.id, MAX_ID_LENGTH)
    if isinstance(result, QueryFailure):
        formula = None if query.formula is None else echoed(query.formula, max_formula_length)
        return BatchItemError(
            index=index, id=item_id, formula=formula, error=ErrorDetail.from_error(result.error)
        )
    assert isinstance(result, QueryPrediction)  # noqa: S101 - the two kinds of result
    return BatchItemOk.from_prediction(
        result.prediction,
        model_version,
        experiment_version,
        index=index,
        id=item_id,
        structure=None if result.structure is None else StructureOut.from_parsed(result.structure),
    )


class HealthOut(BaseModel):
    """The service is ready to predict."""

    status: Literal["ok"] = "ok"
    model_version: str
    trained: bool = Field(description="False while the service runs an untrained placeholder.")
    runtime: ModelRuntime = Field(description="What executes the SavedModel: LiteRT or TensorFlow.")
    max_batch_size: int = Field(description="Most items `POST /predict/batch` accepts.")
    experiment_model_version: str | None = Field(
        default=None,
        description="Version of the experiment head, or null when the model has none.",
    )
    density_model_version: str | None = Field(
        default=None,
        description="Version of the density estimator, or null when the model has none (a "
        "formula without density is then refused).",
    )
