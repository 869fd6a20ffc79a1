"""Ablations: which parts of the magorder recipe matter, measured on one grouped split.

Nothing here is exported or served. It is the record of what was tried to close the gap to the
targets (``python -m model_training ablate``): single networks against the ensemble, dropout,
distillation, an element-set encoder (attention over the elements present, as Roost and
CrabNet do), decision offsets tuned for macro-F1, and per-class calibration. Every variant is
fitted and scored on the same rows as the LightGBM baseline, in the same run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import log_softmax

from app.core.features import DEFAULT_LIMITS, N_ELEMENTS, N_FEATURES
from model_training.baselines import GradientBoostedTrees
from model_training.data import LabelledData
from model_training.element_properties import element_property_table
from model_training.metrics import (
    Labels,
    Scores,
    expected_calibration_error,
    fit_temperature,
    probabilities_from_logits,
    score,
)
from model_training.mp.config import ModelConfig, TrainConfig
from model_training.mp.fit import fit_network
from model_training.mp.network import N_CLASSES
from model_training.network import hidden_layers, standardised_features
from model_training.split import Split

logger = logging.getLogger(__name__)

Logits = npt.NDArray[np.float32]
_OFFSET_GRID = np.linspace(-1.5, 1.5, 61)


class ElementSetEncoder(keras.layers.Layer):  # type: ignore[misc]
    """Self-attention over the elements of a compound, pooled by atomic fraction.

    Each element present becomes a token: a learnt embedding of the element, a projection of
    its (standardised) pymatgen properties and of its fraction. Masked self-attention lets
    every element see the others (Fe next to O is not Fe next to Ge); the tokens are then
    averaged, weighted by fraction, and max-pooled.

    Args:
        width: Token width.
        layers: Attention blocks.
        heads: Attention heads per block.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, width: int = 64, layers: int = 2, heads: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        table = element_property_table()
        standardised = (table - table.mean(axis=0)) / (table.std(axis=0) + 1e-6)
        self._properties = keras.ops.convert_to_tensor(standardised)
        self._slots = DEFAULT_LIMITS.max_elements
        self._embedding = keras.layers.Embedding(N_ELEMENTS, width)
        self._property_projection = keras.layers.Dense(width)
        self._fraction_projection = keras.layers.Dense(width)
        self._blocks = [
            (
                keras.layers.MultiHeadAttention(heads, width // heads),
                keras.layers.LayerNormalization(),
                keras.layers.Dense(2 * width, activation="gelu"),
                keras.layers.Dense(width),
                keras.layers.LayerNormalization(),
            )
            for _ in range(layers)
        ]

    def call(self, features: Any) -> Any:
        """Map ``(n, 119)`` raw features to ``(n, 2 * width)`` pooled element tokens."""
        ops = keras.ops
        counts = ops.maximum(features[:, :N_ELEMENTS], 0.0)
        fractions = counts / ops.maximum(ops.sum(counts, axis=-1, keepdims=True), 1e-6)
        fraction, element = ops.top_k(fractions, self._slots)
        present = fraction > 0
        tokens = (
            self._embedding(element)
            + self._property_projection(ops.take(self._properties, element, axis=0))
            + self._fraction_projection(
                ops.stack([fraction, ops.log(ops.maximum(fraction, 1e-4))], axis=-1)
            )
        )
        pair_mask = ops.logical_and(ops.expand_dims(present, 1), ops.expand_dims(present, 2))
        for attention, norm_1, expand, contract, norm_2 in self._blocks:
            tokens = norm_1(tokens + attention(tokens, tokens, attention_mask=pair_mask))
            tokens = norm_2(tokens + contract(expand(tokens)))
        weighted = ops.sum(tokens * ops.expand_dims(fraction, -1), axis=1)
        strongest = ops.max(ops.where(ops.expand_dims(present, -1), tokens, -1e4), axis=1)
        return ops.concatenate([weighted, strongest], axis=-1)


def build_set_encoder_model(
    config: ModelConfig,
    *,
    feature_mean: npt.NDArray[np.float32] | None = None,
    feature_variance: npt.NDArray[np.float32] | None = None,
    feature_quantiles: npt.NDArray[np.float32] | None = None,
) -> keras.Model:
    """The magorder network with an element-set encoder beside its derived features.

    Args:
        config: Hidden layers, dropout and seed of the head.
        feature_mean: Training mean of each derived feature.
        feature_variance: Training variance of each derived feature.
        feature_quantiles: Training quantiles of each derived feature, for their ranks.

    Returns:
        A Keras model from the ``(n, 119)`` raw vector to ``(n, 4)`` logits.
    """
    keras.utils.set_random_seed(config.seed)
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    derived = standardised_features(features, feature_mean, feature_variance, feature_quantiles)
    x = keras.layers.Concatenate()([ElementSetEncoder()(features), derived])
    logits = keras.layers.Dense(N_CLASSES)(hidden_layers(x, config))
    return keras.Model(features, logits, name=f"set_encoder_seed{config.seed}")


def tune_decision_offsets(logits: Logits, labels: Labels, *, sweeps: int = 3) -> Logits:
    """Per-class offsets added to the logits that maximise macro-F1 (coordinate search).

    Args:
        logits: Validation logits.
        labels: Their classes.
        sweeps: Passes over the classes.

    Returns:
        ``(4,)`` offsets, the first class's fixed at 0 (only differences matter).
    """
    offsets = np.zeros(N_CLASSES, np.float32)
    for _ in range(sweeps):
        for c in range(1, N_CLASSES):
            candidates = np.repeat(offsets[None], len(_OFFSET_GRID), axis=0)
            candidates[:, c] = _OFFSET_GRID
            scores = [score(labels, (logits + o).argmax(axis=1)).macro_f1 for o in candidates]
            offsets = candidates[int(np.argmax(scores))]
    return offsets


def fit_vector_scaling(logits: Logits, labels: Labels) -> tuple[Logits, Logits]:
    """Per-class scale and offset of the logits minimising validation log loss.

    Vector scaling (Guo et al., 2017) generalises temperature scaling: it can also move
    probability between classes, e.g. undo the shift class weights put into training.

    Args:
        logits: Validation logits.
        labels: Their classes.

    Returns:
        ``(scale, offset)``, each ``(4,)``; calibrated logits are ``logits * scale + offset``.
    """
    values = logits.astype(np.float64)

    def log_loss(parameters: npt.NDArray[np.float64]) -> float:
        scaled = values * parameters[:N_CLASSES] + np.r_[0.0, parameters[N_CLASSES:]]
        return float(-log_softmax(scaled, axis=1)[np.arange(len(labels)), labels].mean())

    start = np.r_[np.ones(N_CLASSES), np.zeros(N_CLASSES - 1)]
    fitted = minimize(log_loss, start, method="L-BFGS-B").x
    scale = fitted[:N_CLASSES].astype(np.float32)
    return scale, np.r_[0.0, fitted[N_CLASSES:]].astype(np.float32)


@dataclass(frozen=True, slots=True)
class AblationResult:
    """One variant's figures.

    Attributes:
        name: Short name of the variant.
        description: What differs from the default recipe.
        validation_macro_f1: Macro-F1 on the validation rows (what model selection sees).
        test: Scores on the test rows.
        ece: Expected calibration error on the test rows after its calibration.
    """

    name: str
    description: str
    validation_macro_f1: float
    test: Scores
    ece: float


@dataclass(frozen=True)
class _Variant:
    """Validation and test logits of a fitted variant."""

    validation: Logits
    test: Logits


def _result(
    name: str,
    description: str,
    variant: _Variant,
    validation: Labels,
    test: Labels,
    *,
    temperature: float = 1.0,
) -> AblationResult:
    return AblationResult(
        name=name,
        description=description,
        validation_macro_f1=score(validation, variant.validation.argmax(axis=1)).macro_f1,
        test=score(test, variant.test.argmax(axis=1)),
        ece=expected_calibration_error(probabilities_from_logits(variant.test, temperature), test),
    )


def _temperature_result(
    name: str, description: str, variant: _Variant, validation: Labels, test: Labels
) -> AblationResult:
    temperature = fit_temperature(variant.validation, validation)
    return _result(name, description, variant, validation, test, temperature=temperature)


def _offset_result(
    name: str, description: str, variant: _Variant, validation: Labels, test: Labels
) -> AblationResult:
    offsets = tune_decision_offsets(variant.validation, validation)
    shifted = _Variant(variant.validation + offsets, variant.test + offsets)
    logger.info("%s: decision offsets %s", name, np.round(offsets, 2).tolist())
    return _temperature_result(name, description, shifted, validation, test)


def _vector_scaling_result(
    name: str, description: str, variant: _Variant, validation: Labels, test: Labels
) -> AblationResult:
    scale, offset = fit_vector_scaling(variant.validation, validation)
    logger.info(
        "%s: scale %s, offset %s", name, np.round(scale, 3).tolist(), np.round(offset, 3).tolist()
    )
    scaled = _Variant(variant.validation * scale + offset, variant.test * scale + offset)
    return _result(name, description, scaled, validation, test)


BLEND_WEIGHTS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
"""The networks' shares of the blended logits tried on the validation rows."""


def _blend_result(
    name: str,
    networks: _Variant,
    trees: _Variant,
    validation: Labels,
    test: Labels,
) -> AblationResult:
    """The networks' logits and the trees' log-probabilities, blended; the share by validation."""

    def blended(weight: float) -> _Variant:
        return _Variant(
            weight * networks.validation + (1 - weight) * trees.validation,
            weight * networks.test + (1 - weight) * trees.test,
        )

    scores = {
        weight: score(validation, blended(weight).validation.argmax(axis=1)).macro_f1
        for weight in BLEND_WEIGHTS
    }
    weight = max(scores, key=lambda w: (scores[w], w))
    logger.info("%s: network share %.1f (validation macro-F1 by share %s)", name, weight, scores)
    return _temperature_result(
        name,
        f"the default networks' logits blended {weight:g} : {1 - weight:g} with LightGBM's "
        "log-probabilities (share chosen on validation)",
        blended(weight),
        validation,
        test,
    )


def run_ablation(
    data: LabelledData,
    split: Split,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    strategy: Any,
    verbose: int = 0,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> list[AblationResult]:
    """Fit every variant on the split's training rows and score it on its test rows.

    Args:
        data: The cleaned snapshot.
        split: Train, validation and test rows (grouped by reduced formula).
        model_config: The default network; its ``ensemble_size`` is the default ensemble.
        train_config: How every network is fitted.
        strategy: The ``tf.distribute`` strategy.
        verbose: Keras progress output.
        on_stage: Called with the name of each stage as it starts.

    Returns:
        One result per variant, LightGBM first.
    """
    train, validation, test = split.parts(data)
    on_stage("LightGBM baseline")
    trees = GradientBoostedTrees.fit(train, validation, seed=model_config.seed)
    lightgbm = _Variant(
        np.log(trees.predict_proba(validation.features) + 1e-9),
        np.log(trees.predict_proba(test.features) + 1e-9),
    )
    on_stage("LightGBM teacher (out of fold)")
    teacher = GradientBoostedTrees.out_of_fold_probabilities(
        train, rounds=train_config.teacher_rounds, seed=model_config.seed
    )

    def fit(config: ModelConfig, fit_config: TrainConfig = train_config, **kwargs: Any) -> _Variant:
        network = fit_network(
            train,
            validation,
            model_config=config,
            train_config=fit_config,
            strategy=strategy,
            verbose=verbose,
            teacher=teacher,
            **kwargs,
        )
        return _Variant(network.logits(validation.features), network.logits(test.features))

    single = replace(model_config, ensemble_size=1)
    n_members = model_config.ensemble_size + 2
    members = []
    for index in range(n_members):
        on_stage(f"network {index + 1} of {n_members}")
        members.append(fit(replace(single, seed=model_config.seed + index)))

    def mean_of(count: int) -> _Variant:
        return _Variant(
            np.mean([m.validation for m in members[:count]], axis=0),
            np.mean([m.test for m in members[:count]], axis=0),
        )

    ensemble = mean_of(model_config.ensemble_size)
    on_stage("one network, standardised features without their ranks")
    without_ranks = fit(replace(single, quantile_bins=0))
    on_stage("one network, dropout 0.4")
    more_dropout = fit(replace(single, dropout=0.4))
    on_stage("one network, labels only")
    labels_only = fit(single, replace(train_config, distillation=0.0))
    on_stage("one network with an element-set encoder")
    set_encoder = fit(single, build=build_set_encoder_model)

    y_val, y_test = validation.labels, test.labels
    default = f"the default: {model_config.ensemble_size} networks"
    return [
        _temperature_result("lightgbm", "the baseline", lightgbm, y_val, y_test),
        _offset_result(
            "lightgbm + offsets", "decision offsets tuned on validation", lightgbm, y_val, y_test
        ),
        _temperature_result("magorder", f"{default}, temperature-scaled", ensemble, y_val, y_test),
        _temperature_result(
            f"{n_members} networks", f"{n_members} networks", mean_of(n_members), y_val, y_test
        ),
        _temperature_result("1 network", "one network (seed 0)", members[0], y_val, y_test),
        _temperature_result(
            "no ranks",
            "one network, standardised features without their quantile ranks",
            without_ranks,
            y_val,
            y_test,
        ),
        _temperature_result("dropout 0.4", "one network, dropout 0.4", more_dropout, y_val, y_test),
        _temperature_result(
            "labels only", "one network, no distillation", labels_only, y_val, y_test
        ),
        _temperature_result(
            "set encoder",
            "one network, element-set attention beside the derived features",
            set_encoder,
            y_val,
            y_test,
        ),
        _offset_result(
            "magorder + offsets",
            f"{default}, decision offsets for macro-F1",
            ensemble,
            y_val,
            y_test,
        ),
        _vector_scaling_result(
            "magorder, vector scaling",
            f"{default}, per-class scale and offset fitted for log loss",
            ensemble,
            y_val,
            y_test,
        ),
        _blend_result("magorder + trees", ensemble, lightgbm, y_val, y_test),
    ]


def ablation_table(results: list[AblationResult]) -> str:
    """Format the results as a Markdown table, as the ablation command prints it."""
    lines = [
        "| variant | what differs | validation macro-F1 | test macro-F1 | F1 FM | F1 NM | "
        "F1 FiM | F1 AFM | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        per_class = " | ".join(f"{s.f1:.3f}" for s in result.test.per_class.values())
        lines.append(
            f"| {result.name} | {result.description} | {result.validation_macro_f1:.4f} | "
            f"{result.test.macro_f1:.4f} | {per_class} | {result.ece:.4f} |"
        )
    return "\n".join(lines)
