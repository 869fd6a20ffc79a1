"""The density estimator's card: ``density/MODEL_CARD.md`` and the figures in its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_training.card import write_card
from model_training.density.evaluate import DensityEvaluation
from model_training.metrics import RegressionScores


def metrics_summary(evaluation: DensityEvaluation) -> dict[str, Any]:
    """The figures written into the estimator's ``metadata.json`` (and shown at ``/model``)."""
    return {
        "split": "grouped by reduced formula, the Materials Project head's seed; test "
        "compositions never seen in training",
        "test_rows": evaluation.result("magorder").scores.n,
        "unit": "g/cm3",
        **{result.name: result.scores.to_dict() for result in evaluation.results},
        "relative_error_median": evaluation.relative_error_median,
        "by_number_of_elements": {k: v.to_dict() for k, v in evaluation.by_elements.items()},
        "mp_head_with_estimated_density": evaluation.mp_head,
    }


def _row(name: str, description: str, scores: RegressionScores) -> str:
    return (
        f"| {name} | {scores.n} | {scores.mae:.3f} | {scores.rmse:.3f} | {scores.r2:.3f} | "
        f"{scores.median_absolute_error:.3f} | {description} |"
    )


def write_density_card(
    evaluation: DensityEvaluation, head_dir: Path, *, model_version: str, command: str
) -> Path:
    """Write ``density/MODEL_CARD.md``: every model's scores, the effect on the MP head, errors.

    Args:
        evaluation: The run's figures.
        head_dir: The estimator's directory.
        model_version: Its version.
        command: The command that made it.

    Returns:
        The card's path.
    """
    ours = evaluation.result("magorder").scores
    sizes = evaluation.split_sizes
    lines = [
        f"# magorder density estimator — {model_version}",
        "",
        "Estimates a compound's density (g/cm³) from its composition alone, for formulas sent "
        "without one: the service then predicts with the estimate, says so in "
        '`density_source: "estimated"` and warns. It reads the 119-vector but never its '
        "density slot. Trained on the Materials Project snapshot's densities (DFT-relaxed "
        "structures, so a little below measured densities for most compounds), on the rows "
        "of the Materials Project head's own split. Every figure below was measured in one "
        f"run of `{command}`, on {sizes['test']} test rows whose reduced formulas, and every "
        f"polymorph of them, were never seen in training ({sizes['train']} training and "
        f"{sizes['validation']} validation rows).",
        "",
        "## Every model on the same test rows (g/cm³)",
        "",
        "| model | rows | MAE | RMSE | R² | median abs. error | what it is |",
        "|---|---|---|---|---|---|---|",
        *(_row(r.name, r.description, r.scores) for r in evaluation.results),
        "",
        f"Median relative error of ours: {evaluation.relative_error_median:.1%}. "
        "A formula's polymorphs have different densities (diamond 3.5, graphite 2.3 g/cm³); "
        "a composition-only estimate gives one value for them all, so part of its error "
        "cannot be removed without a structure.",
        "",
        "### By number of elements",
        "",
        "| elements | rows | MAE | R² |",
        "|---|---|---|---|",
        *(f"| {k} | {v.n} | {v.mae:.3f} | {v.r2:.3f} |" for k, v in evaluation.by_elements.items()),
        "",
    ]
    head = evaluation.mp_head
    if head is not None:
        lines += [
            "## The Materials Project head with an estimated density",
            "",
            f"The same {head['rows']} test rows through the Materials Project head "
            f"{head['model_version']}, once with their real density and once with this "
            "estimate:",
            "",
            "| density | macro-F1 | accuracy |",
            "|---|---|---|",
            f"| given | {head['macro_f1_given']:.4f} | {head['accuracy_given']:.4f} |",
            f"| estimated | {head['macro_f1_estimated']:.4f} | {head['accuracy_estimated']:.4f} |",
            "",
            f"{head['answers_changed']:.1%} of the answers change. Give the density when it "
            "is known; the estimate costs little on average, but it cannot tell polymorphs "
            "apart.",
            "",
        ]
    lines += [
        "## Well-known compounds",
        "",
        "| formula | density | estimate |",
        "|---|---|---|",
        *(f"| {w['formula']} | {w['density']} | {w['estimate']} |" for w in evaluation.well_known),
        "",
        "## Largest test errors",
        "",
        "| material | formula | density | estimate |",
        "|---|---|---|---|",
        *(
            f"| `{w['material_id']}` | {w['formula']} | {w['density']} | {w['estimate']} |"
            for w in evaluation.worst
        ),
        "",
        f"MAE on the test rows, {ours.mae:.3f} g/cm³, is what the service quotes in its "
        "warning when it estimates a density.",
        "",
    ]
    return write_card(head_dir, lines)
