"""The Materials Project head's card: MODEL_CARD.md's sections, its plots, its metrics."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from app.core.model_card import HEAD_DIRNAMES
from model_training.card import plot_confusion_matrices, save_figure, write_card
from model_training.data import CLASSES
from model_training.metrics import Scores
from model_training.mp.evaluate import Evaluation, ModelResult

CONFUSION_PLOT = "confusion_matrix.png"
F1_PLOT = "per_class_f1.png"
RELIABILITY_PLOT = "reliability.png"

TARGET_MACRO_F1 = 0.70
TARGET_CLASS_F1 = 0.50
TARGET_ECE = 0.03


def _f(value: float) -> str:
    return f"{value:.3f}"


def _scores_row(name: str, scores: Scores) -> str:
    per_class = " | ".join(_f(scores.per_class[str(c)].f1) for c in CLASSES)
    return (
        f"| {name} | {scores.n} | {_f(scores.accuracy)} | **{_f(scores.macro_f1)}** | "
        f"{_f(scores.balanced_accuracy)} | {per_class} |"
    )


def _scores_table(rows: list[tuple[str, Scores]]) -> list[str]:
    classes = " | ".join(f"F1 {c}" for c in CLASSES)
    return [
        f"| model | rows | accuracy | macro-F1 | balanced accuracy | {classes} |",
        "|---" * (5 + len(CLASSES)) + "|",
        *(_scores_row(name, scores) for name, scores in rows),
    ]


def _per_class_table(result: ModelResult) -> list[str]:
    lines = ["| class | precision | recall | F1 | test rows |", "|---|---|---|---|---|"]
    for name, s in result.test.per_class.items():
        lines.append(
            f"| {name} | {_f(s.precision)} | {_f(s.recall)} | {_f(s.f1)} | {s.support:.0f} |"
        )
    return lines


def _confusion_table(scores: Scores) -> list[str]:
    header = " | ".join(f"→ {c}" for c in CLASSES)
    lines = [f"| label ↓ / predicted | {header} |", "|---" * (1 + len(CLASSES)) + "|"]
    for name, row in zip(CLASSES, scores.confusion, strict=True):
        lines.append(f"| {name} | " + " | ".join(f"{v:.0f}" for v in row) + " |")
    return lines


def _plot_confusion(evaluation: Evaluation, path: Path) -> None:
    shown = [r for r in evaluation.results if r.name in ("lightgbm", "magorder")]
    plot_confusion_matrices(
        [(f"{r.name}: macro-F1 {r.test.macro_f1:.3f}", r.test.confusion) for r in shown],
        [str(c) for c in CLASSES],
        path,
        ylabel="label (MP)",
    )


def _plot_f1(evaluation: Evaluation, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(evaluation.results)
    positions = np.arange(len(CLASSES) + 1)
    for k, result in enumerate(evaluation.results):
        values = [result.test.per_class[str(c)].f1 for c in CLASSES] + [result.test.macro_f1]
        axis.bar(
            positions + (k - (len(evaluation.results) - 1) / 2) * width,
            values,
            width,
            label=result.name,
        )
    axis.axhline(TARGET_CLASS_F1, color="grey", linestyle=":", linewidth=1)
    axis.set_xticks(positions, [*(str(c) for c in CLASSES), "macro"])
    axis.set_ylabel("F1 on the grouped test split")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8, ncols=len(evaluation.results))
    save_figure(figure, path)


def _plot_reliability(evaluation: Evaluation, path: Path) -> None:
    import matplotlib.pyplot as plt

    calibration = evaluation.calibration
    figure, axis = plt.subplots(figsize=(4.5, 4.2))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for bins, label in (
        (calibration.bins_before, f"softmax (ECE {calibration.ece_before:.3f})"),
        (
            calibration.bins_after,
            f"T = {calibration.temperature:.2f} (ECE {calibration.ece_after:.3f})",
        ),
    ):
        confidence, accuracy, _ = zip(*bins, strict=True)
        axis.plot(confidence, accuracy, marker="o", markersize=3, label=label)
    for mean_confidence, bin_accuracy, rows in calibration.bins_after:
        axis.annotate(
            str(rows),
            (mean_confidence, bin_accuracy),
            textcoords="offset points",
            xytext=(0, 5),
            fontsize=6,
            ha="center",
        )
    axis.set_xlabel("confidence (top probability); numbers: test rows per bin")
    axis.set_ylabel("accuracy")
    axis.set_title("magorder reliability, test split")
    axis.legend(fontsize=8)
    save_figure(figure, path)


def metrics_summary(evaluation: Evaluation) -> dict[str, Any]:
    """Return the figures the exported model's ``metadata.json`` carries.

    Args:
        evaluation: The run.

    Returns:
        ``macro_f1`` and the other headline scores of ``magorder`` on the grouped test split,
        its per-class scores and confusion matrix, the baselines' scores, calibration, the
        MP-prior reweighted scores and the leakage gap.
    """
    ours = evaluation.result("magorder")
    return {
        "split": "grouped by reduced formula; test rows never share a formula with training",
        "test_rows": ours.test.n,
        "macro_f1": ours.test.macro_f1,
        "accuracy": ours.test.accuracy,
        "balanced_accuracy": ours.test.balanced_accuracy,
        "per_class": {k: asdict(v) for k, v in ours.test.per_class.items()},
        "confusion_matrix": {"classes": [str(c) for c in CLASSES], "rows": ours.test.confusion},
        "mp_prior_reweighted": {
            "macro_f1": ours.mp_prior.macro_f1,
            "accuracy": ours.mp_prior.accuracy,
            "balanced_accuracy": ours.mp_prior.balanced_accuracy,
        },
        "without_rule_labels": {
            "macro_f1": ours.without_rule_labels.macro_f1,
            "accuracy": ours.without_rule_labels.accuracy,
        },
        "calibration": {
            "temperature": evaluation.calibration.temperature,
            "ece_before_scaling": evaluation.calibration.ece_before,
            "ece_after_scaling": evaluation.calibration.ece_after,
        },
        "baselines": {
            r.name: {"macro_f1": r.test.macro_f1, "accuracy": r.test.accuracy}
            for r in evaluation.results
            if r.name not in ("networks", "magorder")
        },
        "networks_alone": next(
            (
                {"macro_f1": r.test.macro_f1, "accuracy": r.test.accuracy}
                for r in evaluation.results
                if r.name == "networks"
            ),
            None,
        ),
        "leakage_macro_f1": evaluation.leakage,
        "magnetic_vs_nm": {
            "rule": "magnetic when P(NM) < 0.5",
            "snapshot": _binary_summary(ours.magnetic),
            "mp_prior_reweighted": _binary_summary(ours.magnetic_mp_prior),
        },
        "confidence": {
            "validation": evaluation.confidence.validation.to_dict(),
            "test": evaluation.confidence.test.to_dict(),
            "spread_quartiles": evaluation.confidence.spread_quartiles,
        },
        "density_effect": {
            "answers_changed_by_density_factor": {
                f"{k:g}": v for k, v in evaluation.density_effect.changed.items()
            },
            "polymorph_formulas": evaluation.density_effect.polymorph_formulas,
            "labels_differ": evaluation.density_effect.labels_differ,
            "answers_differ": evaluation.density_effect.answers_differ,
        },
    }


def _binary_summary(scores: Scores) -> dict[str, float]:
    magnetic = scores.per_class["magnetic"]
    return {
        "precision": magnetic.precision,
        "recall": magnetic.recall,
        "f1": magnetic.f1,
        "nm_precision": scores.per_class["NM"].precision,
        "nm_recall": scores.per_class["NM"].recall,
        "accuracy": scores.accuracy,
    }


def _targets(evaluation: Evaluation) -> list[str]:
    ours = evaluation.result("magorder")
    trees = evaluation.result("lightgbm")
    worst = min(ours.test.per_class.items(), key=lambda item: item[1].f1)
    checks = [
        (
            f"macro-F1 ≥ {TARGET_MACRO_F1}",
            ours.test.macro_f1 >= TARGET_MACRO_F1,
            _f(ours.test.macro_f1),
        ),
        (
            f"every class F1 ≥ {TARGET_CLASS_F1}",
            worst[1].f1 >= TARGET_CLASS_F1,
            f"lowest: {worst[0]} {_f(worst[1].f1)}",
        ),
        (
            "at least LightGBM's macro-F1 in the same run",
            ours.test.macro_f1 >= trees.test.macro_f1,
            f"{_f(ours.test.macro_f1)} vs {_f(trees.test.macro_f1)}",
        ),
        (
            f"ECE ≤ {TARGET_ECE} after scaling",
            evaluation.calibration.ece_after <= TARGET_ECE,
            _f(evaluation.calibration.ece_after),
        ),
    ]
    return [
        "| target | met | measured |",
        "|---|---|---|",
        *(f"| {name} | {'yes' if met else '**no**'} | {value} |" for name, met, value in checks),
    ]


def write_model_card(
    evaluation: Evaluation,
    directory: Path,
    *,
    model_version: str,
    command: str,
    training: dict[str, Any],
) -> Path:
    """Write MODEL_CARD.md and its three plots into a directory.

    Args:
        evaluation: The run to report.
        directory: Where to write (the exported model's directory).
        model_version: Version of the exported model.
        command: The command line that produced the run, to reproduce it.
        training: Configuration and timing of the ``magorder`` network's training.

    Returns:
        The path of MODEL_CARD.md.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _plot_confusion(evaluation, directory / CONFUSION_PLOT)
    _plot_f1(evaluation, directory / F1_PLOT)
    _plot_reliability(evaluation, directory / RELIABILITY_PLOT)
    ours = evaluation.result("magorder")
    data = evaluation.data
    lines = [
        f"# magorder model card — {model_version}",
        "",
        "Predicts the magnetic ordering Materials Project (MP) would assign to a compound — "
        "ferromagnetic (FM), non-magnetic (NM), ferrimagnetic (FiM) or antiferromagnetic "
        "(AFM) — from its reduced formula and density (the 119-vector of "
        "`app/core/features.py`). Every figure below was measured in one run of "
        f"`{command}`, on one test split **grouped by reduced formula**: no test formula, "
        "nor any polymorph of it, was seen in training.",
        "",
        *_magnetic_lines(evaluation),
        "",
        *_reading_lines(evaluation),
        "",
        "## What the labels mean",
        "",
        "The labels are **MP's DFT results, not experiment**: the collinear GGA/GGA+U ground "
        "state MP's workflow found, from calculations that mostly start ferromagnetic. MP "
        "therefore "
        "calls many experimentally antiferromagnetic compounds FM (Fe2O3, `mp-19770`, is FM "
        "in MP), and this model learns MP's answer. Most rows (`mp_magmoms_rule`) are "
        "labelled from MP's per-site moments with MP's own rule; a small opposite moment on "
        "a ligand is enough to make a compound FiM under that rule, so FiM and AFM here "
        "overlap with FM more than in experiment. The two `rule_*` sources are NM by rule. "
        "What a measurement would find is the experiment head's answer "
        "(`experiment/MODEL_CARD.md`, trained on reported Curie and Néel temperatures by "
        "`python -m model_training experiment`), which uses this model's P(NM).",
        "",
        "## Targets",
        "",
        *_targets(evaluation),
        "",
        "What was tried to reach them, each variant fitted and scored beside LightGBM on one "
        "grouped split, is in the repository's `docs/model_experiments.md` (`python -m "
        "model_training ablate`).",
        "",
        "## Every model on the same test rows",
        "",
        *_scores_table([(r.name, r.test) for r in evaluation.results]),
        "",
        *(f"- **{r.name}**: {r.description}." for r in evaluation.results),
        "",
        f"![per-class F1 of every model]({F1_PLOT})",
        "",
        "### magorder, per class",
        "",
        *_per_class_table(ours),
        "",
        *_confusion_table(ours.test),
        "",
        f"![confusion matrices]({CONFUSION_PLOT})",
        "",
        "### Reweighted to Materials Project's class prior",
        "",
        "The snapshot holds far fewer NM rows than MP (15 % against 54 %). Weighting the "
        "test rows to MP's prior (NM 54 % · FM 37 % · FiM 7 % · AFM 2 %) estimates what a "
        "user screening the whole database would see:",
        "",
        *_scores_table([(r.name, r.mp_prior) for r in evaluation.results]),
        "",
        "### Per label source, and without the rule labels",
        "",
        "| model | " + " | ".join(ours.by_label_source) + " | without `rule_*` |",
        "|---" * (len(ours.by_label_source) + 2) + "|",
        *(
            f"| {r.name} | "
            + " | ".join(
                f"{_f(s.macro_f1)} / {_f(s.accuracy)} (n={s.n})" for s in r.by_label_source.values()
            )
            + f" | {_f(r.without_rule_labels.macro_f1)} / {_f(r.without_rule_labels.accuracy)} |"
            for r in evaluation.results
        ),
        "",
        "Each cell: macro-F1 / accuracy. A source labelled with one class only has a low "
        "macro-F1 by construction (the other classes score 0); read its accuracy.",
        "",
        "## Calibration",
        "",
        f"A temperature of **{evaluation.calibration.temperature:.3f}**, fitted on the "
        "validation rows, is built into the exported model (`probabilities = softmax(logits "
        f"/ T)`). Expected calibration error (15 bins, top label) on the test rows: "
        f"**{evaluation.calibration.ece_before:.4f}** before, "
        f"**{evaluation.calibration.ece_after:.4f}** after. The network is trained with class "
        "weights, so its probabilities lean towards the rare classes; read them as MP-label "
        "odds in a snapshot balanced like this one, not in MP as a whole.",
        "",
        f"![reliability diagram]({RELIABILITY_PLOT})",
        "",
        *_reliability_table(evaluation),
        "",
        *_confidence_lines(evaluation),
        "",
        *_density_lines(evaluation),
        "",
        "## Leakage: grouped against random-row split",
        "",
        "| model | grouped split macro-F1 | random-row split macro-F1 |",
        "|---|---|---|",
        *(
            f"| {name} | {_f(v['grouped'])} | {_f(v['random']) if 'random' in v else 'not run'} |"
            for name, v in evaluation.leakage.items()
        ),
        "",
        "A random-row split puts polymorphs of a test formula in training, so its figures "
        "are optimistic; every other figure on this card uses the grouped split.",
        "",
        "## Well-known compounds",
        "",
        "| formula | density | experiment | predicted | probability | P(NM) | member spread |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {w['formula']} | {w['density']} | {w['experiment']} | {w['predicted']} | "
            f"{w['probability']} | {w['p_nm']} | {w['member_spread']} |"
            for w in evaluation.well_known
        ),
        "",
        "## Error analysis",
        "",
        *_error_lines(evaluation),
        "",
        *_label_noise_lines(evaluation),
        "",
        "## Data",
        "",
        f"- Snapshot `{Path(data.path).name}`, SHA-256 `{data.sha256}`.",
        f"- {data.rows_read} rows read, {data.rows_kept} kept; dropped by reason: "
        + (", ".join(f"{k} {v}" for k, v in data.dropped.items()) or "none")
        + ".",
        *_rule_check_lines(data.contradicted_rule_elements),
        "- Classes kept: " + ", ".join(f"{k} {v}" for k, v in data.class_counts.items()) + ".",
        "- Label sources kept: "
        + ", ".join(f"`{k}` {v}" for k, v in data.label_source_counts.items())
        + ".",
        f"- {data.n_formulas} distinct reduced formulas. Split (grouped by formula, "
        "stratified by ordering, fixed seed): "
        + ", ".join(
            f"{name} {size['rows']} rows / {size['formulas']} formulas"
            for name, size in evaluation.split_sizes.items()
        )
        + ".",
        "- Materials Project data, CC BY 4.0: A. Jain et al., APL Materials 1, 011002 (2013).",
        "",
        "## Training",
        "",
        "```json",
        json.dumps(training, indent=2),
        "```",
        "",
        "## Limitations",
        "",
        "- Composition and density only: the structure, which decides AFM against FM, is not "
        "an input, and the density rarely changes an answer (see *What the density "
        "changes*), so polymorphs of one formula mostly get one answer.",
        "- The labels are MP's DFT labels (see above), partly derived by rule; FiM and AFM "
        "are the least reliable classes, and the scores for them are the lowest.",
        "- Elements absent from the training data, densities outside its range and "
        "fractional (disordered) compositions are extrapolations: the service says so in "
        "`warnings`.",
        "",
    ]
    return write_card(directory, lines, keep=HEAD_DIRNAMES)


def _rule_check_lines(contradicted: dict[str, tuple[int, int]]) -> list[str]:
    if not contradicted:
        return []
    judged = ", ".join(
        f"{element} {non_magnetic} of {seen}"
        for element, (seen, non_magnetic) in sorted(contradicted.items())
    )
    return [
        "- `rule_label_contradicted`: the NM label the snapshot assigns by rule "
        "(`rule_absent_from_magnetic_set`: no polymorph in the magnetic set) was dropped for "
        f"compounds of {', '.join(sorted(contradicted))}. For these elements MP's own labels "
        "of compounds absent from the magnetic set are mostly magnetic: NM in "
        f"{judged} (over all elements, about 95 % are NM). See `model_training/rule_labels.py`."
    ]


def _error_lines(evaluation: Evaluation) -> list[str]:
    summary = evaluation.error_summary
    confusions = ", ".join(
        f"{c['label']} → {c['predicted']} {c['rows']}" for c in summary["top_confusions"]
    )
    lines = [
        f"{summary['errors']} of {summary['test_rows']} test rows are misclassified. "
        f"Most common confusions (label → predicted): {confusions}.",
        "",
        "- Error rate by label source: "
        + ", ".join(f"`{k}` {v:.1%}" for k, v in summary["error_rate_by_label_source"].items())
        + ".",
        "- Error rate by number of elements: "
        + ", ".join(f"{k}: {v:.1%}" for k, v in summary["error_rate_by_n_elements"].items())
        + ".",
        "- Elements (≥ 50 test rows) with the highest error rate: "
        + ", ".join(f"{k} {v:.1%}" for k, v in summary["worst_elements"].items())
        + "; the lowest: "
        + ", ".join(f"{k} {v:.1%}" for k, v in summary["best_elements"].items())
        + ".",
    ]
    if summary["error_rate_ambiguous_formulas"] is not None:
        lines.append(
            f"- {summary['share_of_test_rows_ambiguous']:.1%} of test rows have a formula whose "
            "polymorphs carry different labels in the snapshot; their error rate is "
            f"{summary['error_rate_ambiguous_formulas']:.1%}, against "
            f"{summary['error_rate_other_formulas']:.1%} for the others."
        )
    lines += [
        "",
        f"A random sample of {len(evaluation.errors)} misclassified test rows, most confident "
        "first:",
        "",
        "| formula | density | label (MP) | label source | predicted | confidence |",
        "|---|---|---|---|---|---|",
        *(
            f"| {row.formula_pretty} | {row.density:.3f} | {row.label} | {row.label_source} | "
            f"{row.predicted} | {row.confidence:.3f} |"
            for row in evaluation.errors.itertuples()
        ),
    ]
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _magnetic_lines(evaluation: Evaluation) -> list[str]:
    ours = evaluation.result("magorder")
    missed = ours.magnetic.confusion[1][0]
    magnetic_rows = sum(ours.magnetic.confusion[1])
    rows = []
    for result in evaluation.results:
        for name, scores in (
            ("snapshot", result.magnetic),
            ("MP prior", result.magnetic_mp_prior),
        ):
            magnetic, nm = scores.per_class["magnetic"], scores.per_class["NM"]
            rows.append(
                f"| {result.name} | {name} | {_f(magnetic.precision)} | {_f(magnetic.recall)} | "
                f"**{_f(magnetic.f1)}** | {_f(nm.precision)} | {_f(nm.recall)} | "
                f"{_f(scores.accuracy)} |"
            )
    return [
        "## Magnetic or not: its surest answer",
        "",
        "Whether MP finds a compound magnetic at all (FM, FiM or AFM against NM) is what the "
        "model answers best. `magnetic_probability` in every answer is 1 - P(NM); below, a "
        "compound is called magnetic when it is above 0.5. On the test rows, "
        f"{missed:.0f} of {magnetic_rows:.0f} magnetic compounds are called NM. The MP-prior "
        "rows weight the test rows to Materials Project's own class shares (NM 54 %), as a "
        "user screening the whole database would meet them.",
        "",
        "| model | rows weighted to | precision (magnetic) | recall (magnetic) | F1 (magnetic) "
        "| precision (NM) | recall (NM) | accuracy |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _reading_lines(evaluation: Evaluation) -> list[str]:
    ours = evaluation.result("magorder")
    rule = evaluation.confidence.rule
    test = evaluation.confidence.test
    low, median, high = evaluation.confidence.spread_quartiles
    spread_rule = (
        "no spread threshold made the validation answers more often wrong than right, so "
        "the spread alone never flags an answer"
        if rule.spread_above is None
        else f"above **{rule.spread_above:g}** the answer is flagged too (right "
        f"{_pct(test.spread_accuracy)} of the time on test)"
    )
    return [
        "## Reading an answer",
        "",
        "- `prediction` and `probabilities` are **MP's DFT label**, not experiment (see "
        "*What the labels mean*); the experiment head's `experiment` object says what a "
        "measurement would find.",
        f"- The four-way answer is right {_pct(ours.test.accuracy)} of the time on held-out "
        f"formulas (macro-F1 {_f(ours.test.macro_f1)}); most of its errors are FM against "
        "FiM, which MP's labelling rule separates by small moments composition cannot show. "
        "Trust `magnetic_probability` first, the FM/FiM/AFM split second.",
        "- The probabilities are calibrated (one temperature, fitted on validation) on this "
        "snapshot, whose classes are more even than MP's: read them as odds among compounds "
        "like those MP computed with moments, not as MP-wide base rates.",
        f"- An answer whose top probability leads the second by less than "
        f"**{rule.margin_below:g}** carries a warning: on the validation rows such answers "
        f"were wrong more often than right, and on test they are right "
        f"{_pct(test.margin_accuracy)} of the time.",
        "- `member_spread` is how far the head's networks ("
        + ", ".join(f"`{m}`" for m in rule.members)
        + ")"
        + ("" if evaluation.head.trees is None else ", each blended with the same trees,")
        + " disagree: over the classes, the widest range of their probabilities of one "
        f"class. On test its quartiles are {low:.2f}, {median:.2f} and {high:.2f}; "
        f"{spread_rule}.",
        f"- On test, {_pct(test.flagged)} of the answers carry one of these warnings; they "
        f"are right {_pct(test.flagged_accuracy)} of the time, the others "
        f"{_pct(test.unflagged_accuracy)}.",
    ]


def _reliability_table(evaluation: Evaluation) -> list[str]:
    bins = evaluation.calibration.bins_after
    return [
        "Reliability bins after scaling (15 equal-width bins of the top probability; empty "
        "bins left out):",
        "",
        "| mean confidence | accuracy | test rows |",
        "|---|---|---|",
        *(f"| {c:.3f} | {a:.3f} | {n} |" for c, a, n in bins),
    ]


def _confidence_lines(evaluation: Evaluation) -> list[str]:
    confidence = evaluation.confidence
    rule = confidence.rule
    rows = []
    for name, figures in (("validation", confidence.validation), ("test", confidence.test)):
        rows.append(
            f"| {name} | {figures.rows} | {_pct(figures.margin_flagged)} | "
            f"{_pct(figures.margin_accuracy)} | {_pct(figures.spread_flagged)} | "
            f"{_pct(figures.spread_accuracy)} | {_pct(figures.flagged)} | "
            f"{_pct(figures.flagged_accuracy)} | {_pct(figures.unflagged_accuracy)} |"
        )
    spread = "never" if rule.spread_above is None else f"spread > {rule.spread_above:g}"
    return [
        "## Unsure answers",
        "",
        f"Two rules flag an answer with a warning: margin < {rule.margin_below:g} (top "
        f"probability minus the second) and {spread} (the members' spread). Each threshold "
        "is the widest one for which the validation answers it flags (at least 50 of them), "
        "taken together, were right less than half the time; `model_training/confidence.py` "
        "chooses them. How they fare:",
        "",
        "| rows | n | flagged by margin | their accuracy | flagged by spread | their accuracy "
        "| flagged by either | their accuracy | accuracy of the rest |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _density_lines(evaluation: Evaluation) -> list[str]:
    effect = evaluation.density_effect
    changed = ", ".join(f"x{factor:g}: {share:.1%}" for factor, share in effect.changed.items())
    well_known = ", ".join(f"x{factor:g}: {n}" for factor, n in effect.well_known_changed.items())
    return [
        "## What the density changes",
        "",
        f"Every test density multiplied by a factor, the share of answers that change: "
        f"{changed}. Of the {len(evaluation.well_known)} well-known compounds below, the "
        f"number whose answer changes: {well_known}.",
        "",
        f"{effect.polymorph_formulas} test formulas have several polymorphs; "
        f"{effect.labels_differ} of them carry different labels on different polymorphs, "
        f"and the model gives different answers to the polymorphs of {effect.answers_differ} "
        f"({effect.both_differ} of those whose labels differ): from composition and density, "
        "polymorphs of one formula almost always get one answer, whatever MP says of each.",
    ]


def _label_noise_lines(evaluation: Evaluation) -> list[str]:
    noise = evaluation.label_noise
    lines = [
        "### Labels the composition cannot explain",
        "",
        f"{noise.rows} of the {noise.magnetic_rows} magnetic test labels are on compounds of "
        "s- and p-block elements only (no d or f element to carry a moment). Read as "
        "chemistry, several have an odd electron count or an unusual oxidation state, where "
        "the DFT calculation leaves an unpaired electron, and some look like spurious "
        "moments that MP's rule turns into a label. The model calls "
        f"{noise.called_nm} of them NM; they count as its errors. Those it is surest are NM:",
    ]
    if noise.examples.empty:
        return lines
    return [
        *lines,
        "",
        "| formula | density | label (MP) | label source | P(NM) |",
        "|---|---|---|---|---|",
        *(
            f"| {row.formula_pretty} | {row.density:.3f} | {row.label} | {row.label_source} | "
            f"{row.p_nm:.3f} |"
            for row in noise.examples.itertuples()
        ),
    ]
