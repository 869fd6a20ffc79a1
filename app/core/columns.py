"""The columns of a result: what ``magorder predict``, the table route and the Python API add.

One row per compound: the prediction, the four probabilities, the magnetic probability and
the members' spread, the reduced formula, the density used and where it came from, the
warnings, what experiment would find, and the
error of a row that could not be predicted.
"""

from __future__ import annotations

import re

from app.core.model_card import ExperimentalOrdering, MagneticOrdering
from app.core.results import BatchItemError, BatchItemOk

PROBABILITY_PREFIX = "p_"
CLASSES = tuple(MagneticOrdering)
"""The classes, in the order of the probability columns."""
EXPERIMENT_PREFIX = "exp_"
EXPERIMENT_CLASSES = tuple(ExperimentalOrdering)
EXPERIMENT_COLUMNS = (
    f"{EXPERIMENT_PREFIX}prediction",
    *(f"{EXPERIMENT_PREFIX}{PROBABILITY_PREFIX}{o.value}" for o in EXPERIMENT_CLASSES),
    f"{EXPERIMENT_PREFIX}temperature_kind",
    f"{EXPERIMENT_PREFIX}temperature_K",
    f"{EXPERIMENT_PREFIX}temperature_low_K",
    f"{EXPERIMENT_PREFIX}temperature_high_K",
    f"{EXPERIMENT_PREFIX}warnings",
)
"""What experiment would find, when the model has an experiment head (empty otherwise)."""
ADDED_COLUMNS = (
    "prediction",
    *(f"{PROBABILITY_PREFIX}{ordering.value}" for ordering in CLASSES),
    "magnetic_probability",
    "member_spread",
    "reduced_formula",
    "density_used",
    "density_source",
    "warnings",
    *EXPERIMENT_COLUMNS,
    "error",
)
"""The columns the command adds after every input column."""
NUMERIC_COLUMNS = (
    *(f"{PROBABILITY_PREFIX}{ordering.value}" for ordering in CLASSES),
    "magnetic_probability",
    "member_spread",
    "density_used",
    *(f"{EXPERIMENT_PREFIX}{PROBABILITY_PREFIX}{o.value}" for o in EXPERIMENT_CLASSES),
    *(column for column in EXPERIMENT_COLUMNS if column.endswith("_K")),
)
"""The added columns that hold numbers (a DataFrame gives them as floats)."""


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP's list)."""
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def escape_formula(cell: str) -> str:
    """A cell a spreadsheet shows as the text it is, never runs as a formula.

    A cell beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
    leading ``'``, as OWASP recommends against CSV injection; a cell that is a plain number
    (``-1.5``, ``+2e3``) is left alone, since a spreadsheet reads it as that number and runs
    nothing.

    Args:
        cell: The cell's text.

    Returns:
        The cell, neutralised where it could be read as a formula.
    """
    if cell.startswith(FORMULA_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def _probability(value: float) -> str:
    return f"{value:.6f}"


def result_cells(result: BatchItemOk | BatchItemError) -> dict[str, str]:
    """The output cells of one predicted, or failed, row."""
    if isinstance(result, BatchItemError):
        return {"error": result.error.message}
    cells = {
        "prediction": result.prediction.value,
        "magnetic_probability": _probability(result.magnetic_probability),
        "member_spread": "" if result.member_spread is None else f"{result.member_spread:.4f}",
        "reduced_formula": result.reduced_formula,
        "density_used": f"{result.density:g}",
        "density_source": result.density_source.value,
        "warnings": "; ".join(result.warnings),
    }
    for ordering in CLASSES:
        cells[f"{PROBABILITY_PREFIX}{ordering.value}"] = _probability(
            result.probabilities[ordering]
        )
    experiment = result.experiment
    if experiment is not None:
        temperature = experiment.ordering_temperature
        cells[f"{EXPERIMENT_PREFIX}prediction"] = experiment.prediction.value
        for exp_ordering in EXPERIMENT_CLASSES:
            cells[f"{EXPERIMENT_PREFIX}{PROBABILITY_PREFIX}{exp_ordering.value}"] = _probability(
                experiment.probabilities[exp_ordering]
            )
        cells[f"{EXPERIMENT_PREFIX}temperature_kind"] = temperature.kind.value
        cells[f"{EXPERIMENT_PREFIX}temperature_K"] = f"{temperature.kelvin:.0f}"
        cells[f"{EXPERIMENT_PREFIX}temperature_low_K"] = f"{temperature.low_kelvin:.0f}"
        cells[f"{EXPERIMENT_PREFIX}temperature_high_K"] = f"{temperature.high_kelvin:.0f}"
        cells[f"{EXPERIMENT_PREFIX}warnings"] = "; ".join(experiment.warnings)
    return cells
