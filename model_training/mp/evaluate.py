"""One evaluation run: baselines, the study's network and ours, scored on the same rows.

Everything the model card reports comes from one call of `run_evaluation`: the majority-class
baseline, LightGBM on the same derived features, the ``seed`` preset and the ``magorder``
network, all on one grouped test split; per label source, without the rule-labelled rows and
reweighted to Materials Project's class prior; calibration before and after temperature
scaling; the leakage gap of a random-row split; and an analysis of the errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pymatgen.core.periodic_table import Element

from app.core.features import featurize, parse_formula
from app.core.model_card import ConfidenceRule, MagneticOrdering
from model_training.baselines import GradientBoostedTrees, MajorityBaseline
from model_training.data import CLASSES, CleaningReport, LabelledData
from model_training.metrics import (
    Probabilities,
    Scores,
    expected_calibration_error,
    prior_weights,
    probabilities_from_logits,
    reliability_bins,
    score,
)
from model_training.mp.confidence import (
    RuleFigures,
    choose_rule,
    measure_rule,
    with_test_figures,
)
from model_training.mp.config import ModelConfig, Preset, TrainConfig
from model_training.mp.data import RULE_LABEL_PREFIX
from model_training.mp.fit import fit_network
from model_training.mp.served_head import ServedHead, fit_head
from model_training.split import Split, SplitKind, split_data

logger = logging.getLogger(__name__)

WELL_KNOWN_COMPOUNDS: tuple[tuple[str, float, str], ...] = (
    ("CaTiO3", 4.04, "NM"),
    ("ZrO2", 5.68, "NM"),
    ("MgAl2O4", 3.58, "NM"),
    ("CdS", 4.82, "NM"),
    ("Ag", 10.49, "NM"),
    ("Si", 2.33, "NM"),
    ("NaCl", 2.16, "NM"),
    ("Al2O3", 3.99, "NM"),
    ("TiO2", 4.23, "NM"),
    ("GaAs", 5.32, "NM"),
    ("Cu", 8.96, "NM"),
    ("Fe", 7.87, "FM"),
    ("Co", 8.90, "FM"),
    ("Ni", 8.91, "FM"),
    ("CrO2", 4.89, "FM"),
    ("Fe3O4", 5.17, "FiM"),
    ("NiO", 6.67, "AFM"),
    ("MnO", 5.37, "AFM"),
    ("Cr2O3", 5.22, "AFM"),
)
"""Textbook compounds with a density and the ordering known from experiment."""

ERROR_SAMPLE_SIZE = 25
DENSITY_FACTORS: tuple[float, ...] = (0.7, 0.9, 1.1, 1.3)
"""Densities the answers are recomputed at, as multiples of the real one."""
MAGNETIC_CLASSES: tuple[str, str] = ("NM", "magnetic")
"""Magnetic against non-magnetic: NM, and FM, FiM and AFM together."""
LABEL_NOISE_EXAMPLES = 12


@dataclass(frozen=True)
class ModelResult:
    """One model's figures on the test rows.

    Attributes:
        name: Short name (``majority``, ``lightgbm``, ``seed``, ``magorder``).
        description: What the model is, in a few words.
        test: Scores on every test row.
        by_label_source: Scores on the test rows of each ``label_source``.
        without_rule_labels: Scores on the test rows whose label is not a ``rule_*`` label.
        mp_prior: Scores with rows reweighted to Materials Project's class prior.
        magnetic: Magnetic against NM (`MAGNETIC_CLASSES`), the answer magnetic when
            P(NM) < 0.5.
        magnetic_mp_prior: The same, reweighted to Materials Project's class prior.
        probabilities: ``(n_test, 4)`` test probabilities.
    """

    name: str
    description: str
    test: Scores
    by_label_source: dict[str, Scores]
    without_rule_labels: Scores
    mp_prior: Scores
    magnetic: Scores
    magnetic_mp_prior: Scores
    probabilities: Probabilities = field(repr=False)


@dataclass(frozen=True)
class Confidence:
    """The unsure-answer rule of the served head, and how it fares.

    Attributes:
        rule: The thresholds (chosen on validation) with the test accuracies they quote.
        validation: Its figures on the validation rows.
        test: Its figures on the test rows.
        spread_quartiles: The 25 %, 50 % and 75 % quantiles of the members' spread on test.
    """

    rule: ConfidenceRule
    validation: RuleFigures
    test: RuleFigures
    spread_quartiles: tuple[float, float, float]


@dataclass(frozen=True)
class DensityEffect:
    """What the density changes in the served head's answers, on the test rows.

    Attributes:
        changed: Per factor in `DENSITY_FACTORS`, the share of test answers that change when
            every density is multiplied by it.
        well_known_changed: Per factor, how many of the well-known compounds change answer.
        polymorph_formulas: Test formulas with several rows (polymorphs).
        labels_differ: Of those, how many carry different labels on their polymorphs.
        answers_differ: Of those, how many get different answers for their polymorphs.
        both_differ: Formulas whose labels differ and whose answers differ too.
    """

    changed: dict[float, float]
    well_known_changed: dict[float, int]
    polymorph_formulas: int
    labels_differ: int
    answers_differ: int
    both_differ: int


@dataclass(frozen=True)
class LabelNoise:
    """Test labels the composition cannot explain: magnetic, with no d or f element at all.

    Attributes:
        rows: Magnetic-labelled test rows whose elements are all s- or p-block.
        called_nm: How many of them the served head calls NM.
        magnetic_rows: All magnetic-labelled test rows, for scale.
        examples: Some of them, most confident NM answers first.
    """

    rows: int
    called_nm: int
    magnetic_rows: int
    examples: pd.DataFrame = field(repr=False)


@dataclass(frozen=True)
class Calibration:
    """Calibration of the ``magorder`` network on the test rows.

    Attributes:
        temperature: Fitted on the validation rows; the exported model divides logits by it.
        ece_before: Expected calibration error of the plain softmax.
        ece_after: Expected calibration error after temperature scaling.
        bins_before: Reliability bins (confidence, accuracy, rows) before scaling.
        bins_after: Reliability bins after scaling.
        probabilities: ``(n_test, 4)`` test probabilities after scaling.
    """

    temperature: float
    ece_before: float
    ece_after: float
    bins_before: list[tuple[float, float, int]]
    bins_after: list[tuple[float, float, int]]
    probabilities: Probabilities = field(repr=False)


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation run measured, for the model card and the export.

    Attributes:
        data: What cleaning did to the snapshot.
        split_sizes: Rows and formulas in each part of the grouped split.
        results: Every model's figures: baselines first, then the served head's networks
            alone (with trees), ``magorder`` last.
        calibration: Temperature scaling of ``magorder``.
        leakage: Test macro-F1 of models on the grouped and on a random-row split.
        errors: A sample of ``magorder``'s misclassified test rows.
        error_summary: What the misclassified rows have in common.
        well_known: ``magorder``'s answers for textbook compounds.
        head: The served ``magorder`` head: networks, trees, share, temperature.
        confidence: The unsure-answer rule and how it fares.
        density_effect: What the density changes in the answers.
        label_noise: Test labels the composition cannot explain.
    """

    data: CleaningReport
    split_sizes: dict[str, dict[str, int]]
    results: list[ModelResult]
    calibration: Calibration
    leakage: dict[str, dict[str, float]]
    errors: pd.DataFrame
    error_summary: dict[str, Any]
    well_known: list[dict[str, Any]]
    head: ServedHead = field(repr=False)
    confidence: Confidence
    density_effect: DensityEffect
    label_noise: LabelNoise

    def result(self, name: str) -> ModelResult:
        """Return the result of the model called ``name``."""
        return next(result for result in self.results if result.name == name)


def _score_model(
    name: str, description: str, test: LabelledData, probabilities: Probabilities
) -> ModelResult:
    predicted = probabilities.argmax(axis=1)
    sources = test.rows["label_source"].to_numpy()
    by_source = {
        str(source): score(test.labels[sources == source], predicted[sources == source])
        for source in sorted(set(sources))
    }
    exact = ~test.rows["label_source"].str.startswith(RULE_LABEL_PREFIX).to_numpy()
    nm = CLASSES.index(MagneticOrdering.NM)
    is_magnetic = (test.labels != nm).astype(np.int64)
    called_magnetic = (probabilities[:, nm] < 0.5).astype(np.int64)
    weights = prior_weights(test.labels)
    result = ModelResult(
        name=name,
        description=description,
        test=score(test.labels, predicted),
        by_label_source=by_source,
        without_rule_labels=score(test.labels[exact], predicted[exact]),
        mp_prior=score(test.labels, predicted, sample_weight=weights),
        magnetic=score(is_magnetic, called_magnetic, classes=MAGNETIC_CLASSES),
        magnetic_mp_prior=score(
            is_magnetic, called_magnetic, sample_weight=weights, classes=MAGNETIC_CLASSES
        ),
        probabilities=probabilities,
    )
    per_class = ", ".join(f"{c} {s.f1:.3f}" for c, s in result.test.per_class.items())
    logger.info(
        "%-9s test macro-F1 %.4f (F1 %s), accuracy %.4f",
        name,
        result.test.macro_f1,
        per_class,
        result.test.accuracy,
    )
    return result


def _split_sizes(data: LabelledData, split: Split) -> dict[str, dict[str, int]]:
    return {
        name: {
            "rows": len(positions),
            "formulas": int(data.rows["reduced_formula"].iloc[positions].nunique()),
        }
        for name, positions in (
            ("train", split.train),
            ("validation", split.validation),
            ("test", split.test),
        )
    }


def calibrate(head: ServedHead, test: LabelledData) -> Calibration:
    """Measure the calibration of the head's temperature on the test rows.

    Args:
        head: The served head; its temperature was fitted on the validation rows.
        test: Rows the calibration error is measured on.

    Returns:
        The temperature, the calibration error before and after it, and the scaled test
        probabilities.
    """
    test_logits = head.logits(test.features)
    before = probabilities_from_logits(test_logits)
    after = probabilities_from_logits(test_logits, head.temperature)
    calibration = Calibration(
        temperature=head.temperature,
        ece_before=expected_calibration_error(before, test.labels),
        ece_after=expected_calibration_error(after, test.labels),
        bins_before=reliability_bins(before, test.labels),
        bins_after=reliability_bins(after, test.labels),
        probabilities=after,
    )
    logger.info(
        "temperature %.3f: test ECE %.4f before, %.4f after",
        head.temperature,
        calibration.ece_before,
        calibration.ece_after,
    )
    return calibration


def analyse_errors(
    data: LabelledData,
    test_positions: npt.NDArray[np.int64],
    probabilities: Probabilities,
    *,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Sample the misclassified test rows and summarise what they share.

    Args:
        data: All clean rows (to know which formulas carry several labels).
        test_positions: Positions of the test rows in ``data``.
        probabilities: The model's ``(n_test, 4)`` probabilities for them.
        seed: Seed of the sample.

    Returns:
        A sample of misclassified rows (formula, density, label, source, prediction,
        confidence) and a summary: the most common confusions, the error rate by label source,
        by number of elements and by element, and the share of errors on formulas whose
        polymorphs carry different labels.
    """
    test = data.subset(test_positions)
    predicted = probabilities.argmax(axis=1)
    wrong = predicted != test.labels
    rows = test.rows.assign(
        label=[str(CLASSES[i]) for i in test.labels],
        predicted=[str(CLASSES[i]) for i in predicted],
        confidence=probabilities.max(axis=1).round(3),
        wrong=wrong,
    )
    labels_per_formula = data.rows.groupby("reduced_formula")["ordering"].nunique()
    rows["ambiguous_formula"] = rows["reduced_formula"].map(labels_per_formula).gt(1).to_numpy()
    elements = [tuple(parse_formula(f)[1]) for f in rows["reduced_formula"]]
    rows["n_elements"] = [len(symbols) for symbols in elements]
    confusions = (
        rows[rows["wrong"]].groupby(["label", "predicted"]).size().sort_values(ascending=False)
    )
    element_rows = [
        (symbol, is_wrong)
        for symbols, is_wrong in zip(elements, rows["wrong"], strict=True)
        for symbol in symbols
    ]
    by_element = (
        pd.DataFrame(element_rows, columns=["element", "wrong"])
        .groupby("element")["wrong"]
        .agg(["mean", "size"])
    )
    frequent = by_element[by_element["size"] >= 50].sort_values("mean", ascending=False)
    summary = {
        "test_rows": len(rows),
        "errors": int(wrong.sum()),
        "top_confusions": [
            {"label": label, "predicted": pred, "rows": int(count)}
            for (label, pred), count in confusions.head(6).items()
        ],
        "error_rate_by_label_source": {
            str(k): round(float(v), 4)
            for k, v in rows.groupby("label_source")["wrong"].mean().items()
        },
        "error_rate_by_n_elements": {
            int(k): round(float(v), 4)
            for k, v in rows.groupby("n_elements")["wrong"].mean().items()
        },
        "worst_elements": {str(k): round(float(v), 4) for k, v in frequent["mean"].head(8).items()},
        "best_elements": {str(k): round(float(v), 4) for k, v in frequent["mean"].tail(8).items()},
        "error_rate_ambiguous_formulas": round(
            float(rows.loc[rows["ambiguous_formula"], "wrong"].mean()), 4
        )
        if rows["ambiguous_formula"].any()
        else None,
        "error_rate_other_formulas": round(
            float(rows.loc[~rows["ambiguous_formula"], "wrong"].mean()), 4
        ),
        "share_of_test_rows_ambiguous": round(float(rows["ambiguous_formula"].mean()), 4),
    }
    misclassified = rows[rows["wrong"]]
    sample = misclassified.sample(
        n=min(ERROR_SAMPLE_SIZE, len(misclassified)), random_state=seed
    ).sort_values("confidence", ascending=False)
    columns = ["formula_pretty", "density", "label", "label_source", "predicted", "confidence"]
    return sample[columns].reset_index(drop=True), summary


def _well_known_features(density_factor: float = 1.0) -> npt.NDArray[np.float32]:
    return np.stack(
        [
            featurize(formula, density * density_factor)
            for formula, density, _ in WELL_KNOWN_COMPOUNDS
        ]
    )


def predict_well_known(head: ServedHead) -> list[dict[str, Any]]:
    """Return the served head's answer for each of `WELL_KNOWN_COMPOUNDS`.

    Args:
        head: The served head, calibrated.

    Returns:
        Formula, density, the experimental ordering, the prediction, its probability, P(NM)
        and the members' spread.
    """
    features = _well_known_features()
    probabilities = head.probabilities(features)
    spreads = head.spread(features)
    return [
        {
            "formula": formula,
            "density": density,
            "experiment": expected,
            "predicted": str(CLASSES[int(row.argmax())]),
            "probability": round(float(row.max()), 3),
            "p_nm": round(float(row[CLASSES.index(MagneticOrdering.NM)]), 3),
            "member_spread": round(float(spread), 3),
        }
        for (formula, density, expected), row, spread in zip(
            WELL_KNOWN_COMPOUNDS, probabilities, spreads, strict=True
        )
    ]


def measure_confidence(
    head: ServedHead,
    validation: LabelledData,
    test: LabelledData,
    test_probabilities: Probabilities,
) -> Confidence:
    """Choose the unsure-answer rule on the validation rows and measure it on the test rows.

    Args:
        head: The served head, calibrated.
        validation: Rows the thresholds are chosen on.
        test: Rows they are measured on.
        test_probabilities: The head's probabilities of the test rows (from `calibrate`).

    Returns:
        The rule and its figures.
    """
    figures = [
        (
            head.probabilities(validation.features),
            head.spread(validation.features),
            validation.labels,
        ),
        (test_probabilities, head.spread(test.features), test.labels),
    ]
    rule = choose_rule(*figures[0], members=head.member_names)
    on_validation = measure_rule(rule, *figures[0])
    on_test = measure_rule(rule, *figures[1])
    quartiles = np.quantile(figures[1][1], [0.25, 0.5, 0.75])
    logger.info(
        "unsure answers: margin < %.2f or spread > %s; on test %.1f%% flagged, accuracy "
        "%.3f flagged against %.3f unflagged",
        rule.margin_below,
        rule.spread_above,
        100 * on_test.flagged,
        on_test.flagged_accuracy or float("nan"),
        on_test.unflagged_accuracy or float("nan"),
    )
    return Confidence(
        rule=with_test_figures(rule, on_test),
        validation=on_validation,
        test=on_test,
        spread_quartiles=(float(quartiles[0]), float(quartiles[1]), float(quartiles[2])),
    )


def measure_density_effect(
    head: ServedHead, test: LabelledData, test_probabilities: Probabilities
) -> DensityEffect:
    """Recompute the test answers at other densities; compare the answers of polymorphs.

    Args:
        head: The served head, calibrated.
        test: The test rows.
        test_probabilities: The head's probabilities of them at their real densities.

    Returns:
        What the density changes.
    """
    answers = test_probabilities.argmax(axis=1)
    well_known = head.probabilities(_well_known_features()).argmax(axis=1)
    changed, well_known_changed = {}, {}
    for factor in DENSITY_FACTORS:
        scaled = test.features.copy()
        scaled[:, -1] *= factor
        changed[factor] = float((head.probabilities(scaled).argmax(axis=1) != answers).mean())
        moved = head.probabilities(_well_known_features(factor)).argmax(axis=1)
        well_known_changed[factor] = int((moved != well_known).sum())
    rows = pd.DataFrame(
        {
            "formula": test.rows["reduced_formula"].to_numpy(),
            "label": test.labels,
            "answer": answers,
        }
    )
    polymorphs = rows.groupby("formula").filter(lambda group: len(group) > 1)
    per_formula = polymorphs.groupby("formula").agg(
        labels=("label", "nunique"), answers=("answer", "nunique")
    )
    return DensityEffect(
        changed=changed,
        well_known_changed=well_known_changed,
        polymorph_formulas=len(per_formula),
        labels_differ=int((per_formula["labels"] > 1).sum()),
        answers_differ=int((per_formula["answers"] > 1).sum()),
        both_differ=int(((per_formula["labels"] > 1) & (per_formula["answers"] > 1)).sum()),
    )


def find_label_noise(test: LabelledData, probabilities: Probabilities) -> LabelNoise:
    """Find the magnetic test labels on compounds of s- and p-block elements only.

    Args:
        test: The test rows.
        probabilities: The served head's probabilities of them.

    Returns:
        How many there are, how many the head calls NM, and examples.
    """
    nm = CLASSES.index(MagneticOrdering.NM)
    magnetic = test.labels != nm
    no_moment = np.asarray(
        [
            all(Element(symbol).block in "sp" for symbol in parse_formula(formula)[1])
            for formula in test.rows["reduced_formula"]
        ]
    )
    suspect = magnetic & no_moment
    examples = (
        test.rows.loc[suspect, ["formula_pretty", "density", "label_source"]]
        .assign(
            label=[str(CLASSES[i]) for i in test.labels[suspect]],
            p_nm=probabilities[suspect, nm].round(3),
        )
        .sort_values("p_nm", ascending=False)
        .head(LABEL_NOISE_EXAMPLES)
        .reset_index(drop=True)
    )
    return LabelNoise(
        rows=int(suspect.sum()),
        called_nm=int((probabilities[suspect].argmax(axis=1) == nm).sum()),
        magnetic_rows=int(magnetic.sum()),
        examples=examples,
    )


def run_evaluation(
    data: LabelledData,
    split: Split,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    seed_train_config: TrainConfig | None,
    strategy: Any,
    with_random_split: bool = True,
    verbose: int = 2,
    on_stage: Callable[[str], None] = lambda _: None,
) -> Evaluation:
    """Train and score every model on the same grouped split.

    Args:
        data: The clean rows.
        split: The grouped split every model is trained and scored on.
        model_config: Architecture of the ``magorder`` network.
        train_config: How the ``magorder`` network is fitted.
        seed_train_config: How the ``seed`` preset is fitted; None leaves it out.
        strategy: The ``tf.distribute`` strategy networks are fitted under.
        with_random_split: Also fit LightGBM and ``magorder`` on a random-row split, to
            measure the leakage a row split causes.
        verbose: Keras progress output (0, 1 or 2).
        on_stage: Called with the name of each stage as it starts (progress output).

    Returns:
        The evaluation.
    """
    train, validation, test = split.parts(data)
    results = []
    on_stage("majority-class baseline")
    majority = MajorityBaseline.fit(train)
    majority_class = CLASSES[int(majority.class_shares.argmax())]
    results.append(
        _score_model(
            "majority",
            f'always "{majority_class}", the most common training class',
            test,
            majority.predict_proba(test.features),
        )
    )
    on_stage("LightGBM baseline")
    trees = GradientBoostedTrees.fit(train, validation, seed=model_config.seed)
    results.append(
        _score_model(
            "lightgbm",
            f"LightGBM on the same derived features, {trees.best_iteration} rounds, "
            "balanced class weights",
            test,
            trees.predict_proba(test.features),
        )
    )
    if seed_train_config is not None:
        on_stage("seed preset (the original study's network)")
        seed_network = fit_network(
            train,
            validation,
            model_config=ModelConfig.for_preset(Preset.SEED, seed=model_config.seed),
            train_config=seed_train_config,
            strategy=strategy,
            verbose=verbose,
        )
        results.append(
            _score_model(
                "seed",
                "the original study's 40 x 256 SiLU MLP on the raw vector, with the same "
                "class weights and early stopping, trained on labels alone as the study was",
                test,
                probabilities_from_logits(seed_network.logits(test.features)),
            )
        )
    on_stage("magorder head: networks, trees, share and temperature")
    head = fit_head(
        train,
        validation,
        model_config=model_config,
        train_config=train_config,
        strategy=strategy,
        verbose=verbose,
    )
    calibration = calibrate(head, test)
    ours = calibration.probabilities
    if head.trees is not None:
        results.append(
            _score_model(
                "networks",
                f"the served head's {len(head.network.members)} networks alone, without its trees",
                test,
                probabilities_from_logits(head.network.logits(test.features), head.temperature),
            )
        )
    results.append(_score_model("magorder", head.describe(), test, ours))
    leakage: dict[str, dict[str, float]] = {
        name: {"grouped": next(r for r in results if r.name == name).test.macro_f1}
        for name in ("lightgbm", "magorder")
    }
    if with_random_split:
        on_stage("random-row split (leakage check)")
        random_split = split_data(data, kind=SplitKind.RANDOM, seed=model_config.seed)
        r_train, r_validation, r_test = random_split.parts(data)
        r_trees = GradientBoostedTrees.fit(r_train, r_validation, seed=model_config.seed)
        leakage["lightgbm"]["random"] = score(
            r_test.labels, r_trees.predict_proba(r_test.features).argmax(axis=1)
        ).macro_f1
        r_head = fit_head(
            r_train,
            r_validation,
            model_config=model_config,
            train_config=train_config,
            strategy=strategy,
            verbose=verbose,
        )
        leakage["magorder"]["random"] = score(
            r_test.labels, r_head.logits(r_test.features).argmax(axis=1)
        ).macro_f1
        logger.info("leakage: %s", leakage)
    errors, error_summary = analyse_errors(data, split.test, ours, seed=model_config.seed)
    return Evaluation(
        data=data.report,
        split_sizes=_split_sizes(data, split),
        results=results,
        calibration=calibration,
        leakage=leakage,
        errors=errors,
        error_summary=error_summary,
        well_known=predict_well_known(head),
        head=head,
        confidence=measure_confidence(head, validation, test, ours),
        density_effect=measure_density_effect(head, test, ours),
        label_noise=find_label_noise(test, ours),
    )
