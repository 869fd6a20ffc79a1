"""The experiment head's card: ``experiment/MODEL_CARD.md`` with its plots, and its metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.core.model_card import EXPERIMENT_CLASSES
from model_training.card import plot_confusion_matrices, save_figure, write_card
from model_training.experiment.evaluate import ExperimentEvaluation
from model_training.experiment.export import SOURCES
from model_training.metrics import RegressionScores

PARITY_PLOT = "temperature_parity.png"
CONFUSION_PLOT = "ordering_confusion.png"

TARGET_ACCURACY = 0.90
TARGET_MAE_K = 55.0


def _f(value: float) -> str:
    return f"{value:.3f}"


def metrics_summary(evaluation: ExperimentEvaluation) -> dict[str, Any]:
    """The figures written into the head's ``metadata.json`` (and shown at ``GET /model``)."""
    ours = evaluation.result("magorder")
    assert ours.ordering is not None  # noqa: S101
    assert ours.temperature is not None  # noqa: S101
    return {
        "split": "grouped by reduced formula; test compositions never seen in training",
        "test_records": ours.ordering.n,
        "ordering": {
            "accuracy": ours.ordering.accuracy,
            "macro_f1": ours.ordering.macro_f1,
            "per_class": {
                name: {"precision": s.precision, "recall": s.recall, "f1": s.f1}
                for name, s in ours.ordering.per_class.items()
            },
            "confusion_matrix": {
                "classes": [str(c) for c in EXPERIMENT_CLASSES],
                "rows": ours.ordering.confusion,
            },
            "calibration": {
                "temperature": evaluation.temperature,
                "ece_before_scaling": evaluation.ece_before,
                "ece_after_scaling": evaluation.ece_after,
            },
        },
        "temperature": {
            **ours.temperature.to_dict(),
            "by_kind": {k: v.to_dict() for k, v in ours.temperature_by_kind.items()},
            "interval_coverage": evaluation.interval_coverage,
            "interval_coverage_unwidened": evaluation.interval_coverage_unwidened,
            "interval_margin": evaluation.interval_margin,
            "interval_width_median": evaluation.interval_width_median,
        },
        "baselines": {
            r.name: {
                "accuracy": None if r.ordering is None else r.ordering.accuracy,
                "macro_f1": None if r.ordering is None else r.ordering.macro_f1,
                "temperature_mae": None if r.temperature is None else r.temperature.mae,
                "temperature_r2": None if r.temperature is None else r.temperature.r2,
            }
            for r in evaluation.results
            if r.name != "magorder"
        },
        "combined_called_nm_on_magnetic_test_records": evaluation.called_nm,
    }


def _plot_parity(evaluation: ExperimentEvaluation, path: Path) -> None:
    import matplotlib.pyplot as plt

    frame = evaluation.predictions
    figure, axis = plt.subplots(figsize=(5.2, 5))
    for kind, colour in (("curie", "tab:red"), ("neel", "tab:blue")):
        part = frame[frame["temperature_kind"] == kind]
        label = "T_C (FM)" if kind == "curie" else "T_N (AFM)"
        axis.scatter(
            part["temperature_K"], part["predicted_K"], s=4, alpha=0.35, c=colour, label=label
        )
    axis.plot([1, 1500], [1, 1500], color="black", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlim(1, 1600)
    axis.set_ylim(1, 1600)
    axis.set_xlabel("reported ordering temperature (K)")
    axis.set_ylabel("predicted median (K)")
    ours = evaluation.result("magorder").temperature
    assert ours is not None  # noqa: S101
    axis.set_title(f"test compositions: MAE {ours.mae:.0f} K, R² {ours.r2:.2f}")
    axis.legend(markerscale=3)
    save_figure(figure, path)


def _plot_confusion(evaluation: ExperimentEvaluation, path: Path) -> None:
    panels = [
        (f"{r.name}: accuracy {r.ordering.accuracy:.3f}", r.ordering.confusion)
        for r in evaluation.results
        if r.ordering is not None and r.name != "majority"
    ]
    plot_confusion_matrices(panels, [str(c) for c in EXPERIMENT_CLASSES], path, ylabel="experiment")


def _temperature_cell(scores: RegressionScores | None) -> str:
    if scores is None:
        return "-"
    return f"{scores.mae:.1f} / {scores.rmse:.1f} / {scores.r2:.3f} (n={scores.n})"


def _results_tables(evaluation: ExperimentEvaluation) -> list[str]:
    lines = [
        "| model | accuracy | macro-F1 | F1 FM | F1 AFM | recall AFM |",
        "|---|---|---|---|---|---|",
    ]
    for r in evaluation.results:
        if r.ordering is None:
            continue
        fm, afm = r.ordering.per_class["FM"], r.ordering.per_class["AFM"]
        lines.append(
            f"| {r.name} | **{_f(r.ordering.accuracy)}** | {_f(r.ordering.macro_f1)} | "
            f"{_f(fm.f1)} | {_f(afm.f1)} | {_f(afm.recall)} |"
        )
    lines += [
        "",
        "Ordering temperature, each cell MAE / RMSE (K) / R²:",
        "",
        "| model | all | T_C (FM) | T_N (AFM) |",
        "|---|---|---|---|",
    ]
    for r in evaluation.results:
        if r.temperature is None:
            continue
        lines.append(
            f"| {r.name} | {_temperature_cell(r.temperature)} | "
            f"{_temperature_cell(r.temperature_by_kind.get('curie'))} | "
            f"{_temperature_cell(r.temperature_by_kind.get('neel'))} |"
        )
    lines += ["", *(f"- **{r.name}**: {r.description}." for r in evaluation.results)]
    return lines


def _failure_tables(evaluation: ExperimentEvaluation) -> list[str]:
    failures = evaluation.failures
    lines: list[str] = []
    for key, column, title in (
        ("by_family", "family", "family"),
        ("by_doping", "doping", "doped or not"),
        ("by_n_elements", "n_elements", "number of elements"),
        ("by_source", "first_source", "first source"),
    ):
        lines += [
            "",
            f"| {title} | test records | FM/AFM accuracy | temperature MAE (K) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {row[column]} | {row['records']:.0f} | {_f(row['accuracy'])} | "
            f"{row['temperature_mae_K']:.1f} |"
            for row in failures[key]
        ]
    for key, title in (
        ("worst_temperatures", "The largest temperature errors on test compositions:"),
        ("misclassified_sample", "A random sample of misclassified test compositions:"),
    ):
        lines += [
            "",
            title,
            "",
            "| formula | experiment | predicted | P(FM) | reported K | predicted K | sources |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['formula']} | {r['ordering']} | {r['predicted']} | {r['p_fm']:.2f} | "
            f"{r['temperature_K']:.0f} | {r['predicted_K']:.0f} | {r['sources']} |"
            for r in failures[key]
        ]
    if failures["called_nm_sample"]:
        shares = ", ".join(f"{k} {v:.1%}" for k, v in failures["called_nm_by_doping"].items())
        lines += [
            "",
            "Magnetic test compositions the combined answer calls NM (by doping: "
            f"{shares}), a random sample, most confident first:",
            "",
            "| formula | experiment | MP head P(NM) | P(FM) | reported K | sources |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['formula']} | {r['ordering']} | {r['p_nm_mp']:.2f} | {r['p_fm']:.2f} | "
            f"{r['temperature_K']:.0f} | {r['sources']} |"
            for r in failures["called_nm_sample"]
        ]
    return lines


def _well_known_lines(evaluation: ExperimentEvaluation) -> list[str]:
    lines = [
        "| formula | experiment | reported K | predicted | P(FM if magnetic) | predicted K "
        "(80 % interval) | MP head P(NM) |",
        "|---|---|---|---|---|---|---|",
    ]
    agree = 0
    errors = []
    for r in evaluation.well_known:
        agree += r["predicted"] == r["experiment"]
        errors.append(abs(r["predicted_K"] - r["experiment_K"]))
        p_nm = "-" if r["p_nm_mp"] is None else f"{r['p_nm_mp']:.3f}"
        low, high = r["interval_K"]
        lines.append(
            f"| {r['formula']} | {r['experiment']} | {r['experiment_K']:.0f} | {r['predicted']} "
            f"| {r['p_fm']:.2f} | {r['predicted_K']:.0f} ({low:.0f} to {high:.0f}) | {p_nm} |"
        )
    lines.insert(
        0,
        f"FM/AFM agrees with experiment for {agree} of {len(evaluation.well_known)}; the "
        f"temperature's MAE over them is {np.mean(errors):.0f} K. Whether these compositions "
        "are in the snapshot or not, none of the published figures above depend on them.\n",
    )
    return lines


def write_experiment_card(
    evaluation: ExperimentEvaluation,
    head_dir: Path,
    *,
    model_version: str,
    command: str,
) -> Path:
    """Write the head's ``MODEL_CARD.md`` and plots into its directory.

    Args:
        evaluation: The evaluation run.
        head_dir: The exported head's directory (``<model dir>/experiment``).
        model_version: Its version.
        command: The command that produced it.

    Returns:
        The card's path.
    """
    _plot_parity(evaluation, head_dir / PARITY_PLOT)
    _plot_confusion(evaluation, head_dir / CONFUSION_PLOT)
    ours = evaluation.result("magorder")
    trees = evaluation.result("lightgbm")
    assert ours.ordering is not None  # noqa: S101
    assert ours.temperature is not None  # noqa: S101
    assert trees.ordering is not None  # noqa: S101
    data = evaluation.data
    dropped = ", ".join(f"{k} {v}" for k, v in data["dropped"].items())
    called_nm = (
        "-"
        if evaluation.called_nm is None
        else f"{evaluation.called_nm:.1%} of the (all magnetic) test compositions"
    )
    density_line = (
        ""
        if evaluation.density_estimator_mae is None
        else f" The MP head needs a density, which the sources lack: it gets one estimated "
        f"from the composition by LightGBM fitted on the MP snapshot (MAE "
        f"{evaluation.density_estimator_mae:.3f} g/cm³ on held-out MP formulas)."
    )
    lines = [
        f"# magorder experiment head — {model_version}",
        "",
        "What **experiment** would find for a magnetic compound: whether it orders "
        "ferromagnetically (FM; ferrimagnets count as FM, as in the sources, since both are "
        "reported with a Curie temperature) or antiferromagnetically (AFM, a Néel "
        "temperature), and at what temperature. It reads the 119-vector of "
        "`app/core/features.py` but never its density: the literature sources give none. "
        f"Every figure below comes from one run of `{command}`, on a test split grouped by "
        "reduced formula (no test composition was seen in training).",
        "",
        "## How the service combines it with the Materials Project head",
        "",
        "The sources hold only magnetic compounds, so this head cannot say NM. The service "
        "takes P(NM) from the Materials Project head (its magnetic-against-NM figures are "
        "at the top of its own card) and "
        "splits the rest by this head: P(NM) = P_MP(NM), P(FM) = (1 - P_MP(NM)) · "
        "P(FM | magnetic), P(AFM) = (1 - P_MP(NM)) · P(AFM | magnetic); the experimental "
        "answer is the most probable of the three. One exception: for compounds of Pr, Nd, "
        "Pm, Sm, Tb, Dy, Ho, Er, Tm or Yb, whose 4f electrons MP's calculations freeze in the "
        "core, MP's NM verdict says nothing about experiment (where those 4f moments order), "
        "so P(NM) is taken as 0 and the answer says so in a warning. The ordering "
        "temperature is the temperature at which the compound orders if it orders at all: "
        "the Curie temperature "
        "when FM is the more probable magnetic answer, the Néel temperature otherwise. On the "
        f"test compositions, with estimated densities, the combined answer says NM for "
        f"{called_nm}; the sample below shows which.",
        "",
        "## Targets",
        "",
        "| target | met | measured |",
        "|---|---|---|",
        f"| FM/AFM accuracy ≥ {TARGET_ACCURACY:.2f} | "
        f"{'yes' if ours.ordering.accuracy >= TARGET_ACCURACY else '**no**'} | "
        f"{_f(ours.ordering.accuracy)} |",
        f"| above LightGBM in the same run | "
        f"{'yes' if ours.ordering.accuracy > trees.ordering.accuracy else '**no**'} | "
        f"{_f(ours.ordering.accuracy)} vs {_f(trees.ordering.accuracy)} |",
        f"| ordering-temperature MAE ≤ {TARGET_MAE_K:.0f} K | "
        f"{'yes' if ours.temperature.mae <= TARGET_MAE_K else '**no**'} | "
        f"{ours.temperature.mae:.1f} K |",
        "",
        "## Every model on the same test compositions",
        "",
        *_results_tables(evaluation),
        "",
        f"![FM/AFM confusion matrices]({CONFUSION_PLOT})",
        "",
        "## How sure it is",
        "",
        f"- **P(FM | magnetic)** is temperature-scaled (T = {evaluation.temperature:.3f}, "
        "fitted on the validation compositions): expected calibration error on test "
        f"{evaluation.ece_before:.4f} before, {evaluation.ece_after:.4f} after.",
        "- **Ordering temperature**: the median of the network's prediction (fitted on its "
        "error in kelvin as well as in ln T), with an 80 % "
        "interval: the network's own 10 % and 90 % quantiles (pinball loss on ln T, not an "
        "ensemble spread), moved apart by a margin chosen on the validation compositions so "
        "that 80 % of theirs fall inside (conformalised quantile regression; margin "
        f"{evaluation.interval_margin:+.3f} in ln T, a factor of "
        f"{np.exp(evaluation.interval_margin):.2f} on each side). On test, "
        f"{evaluation.interval_coverage:.1%} of reported temperatures fall inside it "
        f"({evaluation.interval_coverage_unwidened:.1%} inside the quantiles alone; median "
        f"width {evaluation.interval_width_median:.0f} K).",
        "",
        f"![parity plot]({PARITY_PLOT})",
        "",
        "## Where it fails",
        *_failure_tables(evaluation),
        "",
        "## Textbook magnets",
        "",
        *_well_known_lines(evaluation),
        "",
        "## Data",
        "",
        f"- Snapshot `{Path(data['path']).name}`, SHA-256 `{data['sha256']}`: "
        f"{data['rows_read']} reported transitions; {data['rows_kept']} compositions kept "
        f"(FM {data['class_counts']['FM']}, AFM {data['class_counts']['AFM']}).",
        f"- Dropped or merged, by reason: {dropped}. Rules "
        "(`model_training/experiment/data.py`): formulas the service would refuse; 0 K or "
        "less; above 1,500 K (cobalt's ~1,390 K is the highest known Curie temperature, so "
        "these are extraction errors); a composition reported both FM and AFM keeps the "
        "ordering of at least two thirds of its reports (the others are dropped as "
        "`minority_ordering_report`), and is dropped whole (`conflicting_ordering`) when "
        "neither reaches two thirds — canted antiferromagnets, manganites with both "
        "transitions and misfiled entries mostly; repeated reports of one composition are "
        "merged into one record with the median temperature, the count and range kept.",
        "- Reports kept by source: "
        + ", ".join(f"{k} {v}" for k, v in data["label_source_counts"].items())
        + ".",
        f"- Split (grouped by reduced formula, stratified by ordering, fixed seed): train "
        f"{evaluation.split_sizes['train']}, validation {evaluation.split_sizes['validation']}, "
        f"test {evaluation.split_sizes['test']} compositions.{density_line}",
        "- Sources, to cite: " + "; ".join(SOURCES) + ".",
        "",
        "## Limitations",
        "",
        "- Composition only: the structure, which decides FM against AFM for one composition, "
        "is not an input; nor are pressure, strain or sample quality.",
        "- The labels are which list a source filed a compound in (NEMAD misfiles some: NiO "
        "appears in its Curie list), so FM/AFM labels carry noise; BERT-PSIE's text-mined "
        "'Curie' temperatures are the noisiest source.",
        "- Doped and fractional compositions dominate the data; neighbouring members of one "
        "doped series are different formulas, so they can sit on both sides of the split.",
        "- It has never seen a non-magnetic compound: its answer assumes the compound orders.",
        "",
    ]
    return write_card(head_dir, lines)
