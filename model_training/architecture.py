"""The networks: derived composition features computed inside the model, then a classifier.

Every model takes the raw 119-vector of `app.core.features`, so the API contract stays the same
whatever the network derives from it. The derived features are a Keras layer, so the exported
SavedModel carries them and the service passes only the raw vector.
"""

from __future__ import annotations

from typing import Any, Protocol

import keras
import numpy as np
import numpy.typing as npt

from app.core.features import N_ELEMENTS, N_FEATURES, element_symbols
from app.core.model_card import MagneticOrdering
from model_training.config import ModelConfig, Preset
from model_training.element_properties import (
    PROPERTY_NAMES,
    atomic_masses,
    charge_tables,
    element_property_table,
)

N_CLASSES = len(MagneticOrdering)
_FRACTION_NORMS = (2.0, 3.0, 5.0, 10.0)
# 1 g/cm³ is 1 atomic mass unit per 1.66054 Å³.
_CUBIC_ANGSTROM_PER_AMU_AT_UNIT_DENSITY = 1.66054
_STATISTICS = ("mean", "std", "min", "max")
_OXYGEN, _FLUORINE = 7, 8  # feature indices (Z - 1)
_CHARGE_BALANCE_FEATURES = (
    "tm_oxidation_state",
    "tm_d_electrons",
    "tm_unpaired_d",
    "tm_closed_shell",
    "has_variable_cation",
    "variable_cation_fraction",
    "charge_residual_per_atom",
)


_DENSITY_FEATURES = ("density", "log_density", "volume_per_atom")


def derived_feature_names(*, with_density: bool = True) -> tuple[str, ...]:
    """Name every column `CompositionFeatures` produces, in order.

    Args:
        with_density: Whether the density and what is computed from it are among them.
    """
    return (
        *(f"fraction_{symbol}" for symbol in element_symbols()),
        *(f"{stat}_{name}" for stat in _STATISTICS for name in PROPERTY_NAMES),
        *(_DENSITY_FEATURES if with_density else ()),
        "log_atoms_in_formula",
        "n_elements",
        "max_fraction",
        *(f"fraction_norm_{p:g}" for p in _FRACTION_NORMS),
        *_CHARGE_BALANCE_FEATURES,
    )


@keras.saving.register_keras_serializable(package="magorder")
class CompositionFeatures(keras.layers.Layer):  # type: ignore[misc]
    """Turns the raw vector into chemistry a network can learn from.

    Counts depend on how a formula is written down (``Fe2O3`` has 5 atoms, ``Fe2O3·H2O``
    more); fractions describe the chemistry whatever the formula unit. Fraction-weighted
    statistics of element properties (Magpie-style) let the network generalise across
    elements with similar chemistry, and the volume per atom, from density and mass, says how
    close the atoms sit, which decides whether moments couple. A charge-balance estimate
    of the transition metals' oxidation state gives their d-electron count: d0 and d10 ions
    (Ti4+ in CaTiO3, Zr4+ in ZrO2, Zn2+) carry no moment, whatever the element.

    Args:
        with_density: False leaves out the density and the volume per atom: the layer then
            never reads the vector's density, for models trained on data that have none.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, with_density: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.with_density = with_density
        table = element_property_table()
        self._properties = keras.ops.convert_to_tensor(table)
        self._properties_squared = keras.ops.convert_to_tensor(np.square(table))
        self._masses = keras.ops.convert_to_tensor(atomic_masses()[:, None])
        charges = charge_tables()
        self._charge_with_oxygen = keras.ops.convert_to_tensor(charges.charge_with_oxygen)
        self._charge_without_oxygen = keras.ops.convert_to_tensor(charges.charge_without_oxygen)
        self._variable = keras.ops.convert_to_tensor(charges.variable)
        self._valence = keras.ops.convert_to_tensor(charges.valence_electrons)

    def _charge_balance(self, counts: Any, total: Any) -> list[Any]:
        """Oxidation state and d-electron count of the variable cations, by charge balance.

        Anions and fixed-charge cations take their typical charges (which depend on whether
        O or F is present: S is -2 in FeS2 but +6 in FeSO4); the variable cations (the
        transition metals, the actinides) share what is left equally.
        """
        ops = keras.ops
        oxidising = (counts[:, _OXYGEN : _OXYGEN + 1] + counts[:, _FLUORINE : _FLUORINE + 1]) > 0
        charges = ops.where(oxidising, self._charge_with_oxygen, self._charge_without_oxygen)
        negative = ops.sum(counts * ops.relu(-charges), axis=-1, keepdims=True)
        positive = ops.sum(counts * ops.relu(charges), axis=-1, keepdims=True)
        n_variable = ops.sum(counts * self._variable, axis=-1, keepdims=True)
        has_variable = n_variable > 0
        safe_n = ops.maximum(n_variable, 1e-6)
        oxidation = ops.where(has_variable, (negative - positive) / safe_n, 0.0)
        valence = ops.sum(counts * self._valence, axis=-1, keepdims=True) / safe_n
        d_electrons = ops.where(has_variable, ops.clip(valence - oxidation, 0.0, 10.0), 0.0)
        closed = ops.logical_and(has_variable, ops.logical_or(d_electrons < 0.5, d_electrons > 9.5))
        residual = ops.where(has_variable, 0.0, (negative - positive) / total)
        return [
            oxidation,
            d_electrons,
            ops.minimum(d_electrons, 10.0 - d_electrons),
            ops.cast(closed, "float32"),
            ops.cast(has_variable, "float32"),
            n_variable / total,
            residual,
        ]

    def call(self, features: Any) -> Any:
        """Map ``(n, 119)`` raw features to ``(n, len(derived_feature_names()))``."""
        ops = keras.ops
        counts = ops.maximum(features[:, :N_ELEMENTS], 0.0)
        total = ops.maximum(ops.sum(counts, axis=-1, keepdims=True), 1e-6)
        fractions = counts / total
        present = counts > 0
        mean = ops.matmul(fractions, self._properties)
        variance = ops.matmul(fractions, self._properties_squared) - ops.square(mean)
        std = ops.sqrt(ops.maximum(variance, 0.0) + 1e-6)
        present_3d = ops.expand_dims(present, -1)
        table = ops.expand_dims(self._properties, 0)
        big = 1e6
        minimum = ops.min(ops.where(present_3d, table, big), axis=1)
        maximum = ops.max(ops.where(present_3d, table, -big), axis=1)
        if self.with_density:
            density = ops.maximum(features[:, N_ELEMENTS:], 1e-3)
            mass_per_atom = ops.matmul(fractions, self._masses)
            volume_per_atom = mass_per_atom * _CUBIC_ANGSTROM_PER_AMU_AT_UNIT_DENSITY / density
            density_features = [density, ops.log(density), volume_per_atom]
        else:
            density_features = []
        norms = [
            ops.power(ops.sum(ops.power(fractions, p), axis=-1, keepdims=True), 1.0 / p)
            for p in _FRACTION_NORMS
        ]
        return ops.concatenate(
            [
                fractions,
                mean,
                std,
                minimum,
                maximum,
                *density_features,
                ops.log(total),
                ops.sum(ops.cast(present, "float32"), axis=-1, keepdims=True),
                ops.max(fractions, axis=-1, keepdims=True),
                *norms,
                *self._charge_balance(counts, total),
            ],
            axis=-1,
        )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Return ``(n, number of derived features)``."""
        return (input_shape[0], len(derived_feature_names(with_density=self.with_density)))

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation."""
        return {**super().get_config(), "with_density": self.with_density}


@keras.saving.register_keras_serializable(package="magorder")
class TemperatureSoftmax(keras.layers.Layer):  # type: ignore[misc]
    """Softmax of logits divided by a fixed temperature (fitted on validation data).

    Args:
        temperature: Above 1 softens over-confident probabilities, below 1 sharpens them.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature=}")
        self.temperature = float(temperature)

    def call(self, logits: Any) -> Any:
        """Return probabilities of shape ``(n, classes)``."""
        return keras.ops.softmax(logits / self.temperature, axis=-1)

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation."""
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="magorder")
class QuantileRanks(keras.layers.Layer):  # type: ignore[misc]
    """Each derived feature mapped to its rank among the training rows, in ``[-1, 1]``.

    The rank is the training-split distribution function, linear between quantiles. Most
    derived features are skewed (an element fraction is 0 in nearly every row, a property
    mean has long tails), and a standardised value spends the network's first layer on
    that shape; the rank does not, as a tree's split thresholds do not.

    Args:
        quantiles: ``(levels, n_features)`` training-split quantiles at evenly spaced levels
            from 0 to 1, ascending down each column.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, quantiles: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        table = np.asarray(quantiles, dtype=np.float32)
        if table.ndim != 2 or len(table) < 2 or np.any(np.diff(table, axis=0) < 0):
            raise ValueError("quantiles must be (levels >= 2, n_features), ascending by level")
        self._table = table
        self._lower = keras.ops.convert_to_tensor(table[:-1][None])
        # A flat step (many rows at one value, e.g. a fraction of 0) becomes a jump there.
        self._width = keras.ops.convert_to_tensor(np.maximum(np.diff(table, axis=0), 1e-6)[None])

    def call(self, derived: Any) -> Any:
        """Map ``(n, n_features)`` derived features to ``(n, n_features)`` ranks."""
        ops = keras.ops
        steps = ops.clip((ops.expand_dims(derived, 1) - self._lower) / self._width, 0.0, 1.0)
        return 2.0 * ops.mean(steps, axis=1) - 1.0

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Return the input's shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation."""
        return {**super().get_config(), "quantiles": self._table.tolist()}


def feature_quantiles(derived: npt.NDArray[np.float32], bins: int) -> npt.NDArray[np.float32]:
    """The quantiles `QuantileRanks` reads: ``bins + 1`` evenly spaced levels of each column.

    Args:
        derived: ``(n, n_features)`` derived features of the training rows.
        bins: Intervals between quantiles.

    Returns:
        ``(bins + 1, n_features)`` float32 quantiles.
    """
    return np.quantile(derived, np.linspace(0.0, 1.0, bins + 1), axis=0).astype(np.float32)


def training_statistics(
    derived: npt.NDArray[np.float32], *, quantile_bins: int = 0
) -> dict[str, npt.NDArray[np.float32]]:
    """What a network bakes in of its training rows, as keyword arguments of its builder.

    Args:
        derived: ``(n, n_features)`` derived features of the training rows.
        quantile_bins: With more than 0, also their quantiles (`feature_quantiles`).

    Returns:
        ``feature_mean`` and ``feature_variance``, and ``feature_quantiles`` when asked for.
    """
    statistics = {"feature_mean": derived.mean(axis=0), "feature_variance": derived.var(axis=0)}
    if quantile_bins:
        statistics["feature_quantiles"] = feature_quantiles(derived, quantile_bins)
    return statistics


def _beside_ranks(x: Any, derived: Any, quantiles: npt.NDArray[np.float32] | None) -> Any:
    """``x`` with the ranks of ``derived`` (`QuantileRanks`) after it; ``x`` without quantiles."""
    if quantiles is None:
        return x
    ranks = QuantileRanks(quantiles=quantiles, name="ranks")(derived)
    return keras.layers.Concatenate(name="standardised_and_ranks")([x, ranks])


def derived_features(
    features: npt.NDArray[np.float32], *, with_density: bool = True
) -> npt.NDArray[np.float32]:
    """Compute the derived features of raw vectors outside a model, e.g. for baselines.

    Args:
        features: ``(n, 119)`` raw feature matrix.
        with_density: Whether to include the density and what is computed from it.

    Returns:
        ``(n, len(derived_feature_names(with_density=...)))`` float32 matrix, exactly what
        the network sees before standardisation.
    """
    layer = CompositionFeatures(with_density=with_density)
    return np.asarray(layer(features), dtype=np.float32)


def standardised_features(
    features: Any,
    feature_mean: npt.NDArray[np.float32] | None,
    feature_variance: npt.NDArray[np.float32] | None,
    feature_quantiles: npt.NDArray[np.float32] | None = None,
) -> Any:
    """Derived features of a Keras input, standardised with the training-split statistics.

    Args:
        features: The ``(n, 119)`` raw-vector input.
        feature_mean: Mean of each derived feature; zeros when omitted.
        feature_variance: Variance of each derived feature; ones when omitted.
        feature_quantiles: Training-split quantiles of each derived feature
            (`feature_quantiles`): with them, each feature's rank (`QuantileRanks`) follows
            the standardised features.

    Returns:
        The ``(n, len(derived_feature_names()))`` standardised tensor, twice as wide with
        the ranks.
    """
    n_derived = len(derived_feature_names())
    mean = np.zeros(n_derived, np.float32) if feature_mean is None else feature_mean
    variance = np.ones(n_derived, np.float32) if feature_variance is None else feature_variance
    x = CompositionFeatures(name="composition")(features)
    standardised = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(x)
    return _beside_ranks(standardised, x, feature_quantiles)


def density_free_inputs(
    features: Any,
    *,
    feature_mean: npt.NDArray[np.float32] | None,
    feature_variance: npt.NDArray[np.float32] | None,
    clip: float | None,
    element_embedding: int,
    feature_quantiles: npt.NDArray[np.float32] | None = None,
) -> Any:
    """The inputs of the heads that never read density: the experiment head, the estimator.

    Args:
        features: The ``(n, 119)`` raw-vector input.
        feature_mean: Training-split mean of each density-free derived feature; zeros when
            omitted.
        feature_variance: Their training-split variance; ones when omitted.
        clip: Standardised features are clipped to ``[-clip, clip]`` (a rare element's
            fraction, standardised, would otherwise reach values in the hundreds); None: not.
        element_embedding: Width of a learnt vector per element, averaged over the
            composition by atomic fraction and set beside the derived features (0: none).
        feature_quantiles: Training-split quantiles of each density-free derived feature:
            with them, each feature's rank (`QuantileRanks`) is set beside it.

    Returns:
        The standardised derived features, with their ranks and the embedding when asked for.
    """
    n_derived = len(derived_feature_names(with_density=False))
    mean = np.zeros(n_derived, np.float32) if feature_mean is None else feature_mean
    variance = np.ones(n_derived, np.float32) if feature_variance is None else feature_variance
    derived = CompositionFeatures(with_density=False, name="composition")(features)
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(derived)
    if clip is not None:
        x = keras.ops.clip(x, -clip, clip)
    x = _beside_ranks(x, derived, feature_quantiles)
    if not element_embedding:
        return x
    counts = keras.ops.maximum(features[:, :N_ELEMENTS], 0.0)
    fractions = counts / keras.ops.maximum(keras.ops.sum(counts, axis=-1, keepdims=True), 1e-6)
    embedded = keras.layers.Dense(element_embedding, use_bias=False, name="element_embedding")(
        fractions
    )
    return keras.layers.Concatenate(name="with_embedding")([x, embedded])


class HiddenStack(Protocol):
    """What `hidden_layers` reads of a configuration."""

    @property
    def hidden_units(self) -> tuple[int, ...]:
        """Width of each hidden layer."""

    @property
    def dropout(self) -> float:
        """Dropout rate after each hidden layer."""


def hidden_layers(x: Any, config: HiddenStack) -> Any:
    """The hidden stack of the magorder networks: dense, layer norm, GELU and dropout per layer.

    Args:
        x: The input tensor.
        config: Its widths and dropout (`ModelConfig`, or the experiment head's config).

    Returns:
        The output of the last layer.
    """
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, name=f"hidden_{i}")(x)
        x = keras.layers.LayerNormalization(name=f"norm_{i}")(x)
        x = keras.layers.Activation("gelu", name=f"gelu_{i}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    return x


def build_logits_model(
    config: ModelConfig,
    *,
    feature_mean: npt.NDArray[np.float32] | None = None,
    feature_variance: npt.NDArray[np.float32] | None = None,
    feature_quantiles: npt.NDArray[np.float32] | None = None,
) -> keras.Model:
    """Build an untrained network from raw features to class logits.

    Args:
        config: The architecture and its size.
        feature_mean: Training-split mean of each derived feature (``magorder`` preset), baked
            into the model as its standardisation; zeros when omitted.
        feature_variance: Training-split variance of each derived feature; ones when omitted.
        feature_quantiles: Training-split quantiles of each derived feature; with them the
            network also reads each feature's rank (`standardised_features`).

    Returns:
        A Keras model mapping ``(n, 119)`` float32 features to ``(n, 4)`` logits, columns in
        `MagneticOrdering` order.
    """
    keras.utils.set_random_seed(config.seed)
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    if config.preset is Preset.SEED:
        # The study's network, as it was: the raw vector straight into a deep SiLU stack.
        x = features
        for i, units in enumerate(config.hidden_units):
            x = keras.layers.Dense(units, activation="silu", name=f"hidden_{i}")(x)
    else:
        inputs = standardised_features(features, feature_mean, feature_variance, feature_quantiles)
        x = hidden_layers(inputs, config)
    logits = keras.layers.Dense(N_CLASSES, name="logits")(x)
    # Unique per seed: ensemble members live side by side in one exported model.
    return keras.Model(features, logits, name=f"{config.preset}_seed{config.seed}")


def with_probabilities(logits_model: keras.Model, temperature: float = 1.0) -> keras.Model:
    """Wrap a logits model into the served model: raw features to calibrated probabilities.

    Args:
        logits_model: A model from `build_logits_model`, trained.
        temperature: The calibration temperature.

    Returns:
        A model mapping ``(n, 119)`` features to ``(n, 4)`` probabilities that sum to 1.
    """
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    probabilities = TemperatureSoftmax(temperature=temperature, name="probabilities")(
        logits_model(features)
    )
    return keras.Model(features, probabilities, name="magorder_served")


@keras.saving.register_keras_serializable(package="magorder")
class MemberSpread(keras.layers.Layer):  # type: ignore[misc]
    """How far ensemble members disagree: members' logits to ``(n, 1)``.

    Each member's logits go through the same temperature softmax as the served answer; the
    spread is, over the classes, the widest range of the members' probabilities of one class.

    Args:
        temperature: The calibration temperature.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, member_logits: list[Any]) -> Any:
        """Return the ``(n, 1)`` spread of a list of ``(n, classes)`` logits."""
        ops = keras.ops
        members = ops.stack(
            [ops.softmax(logits / self.temperature, axis=-1) for logits in member_logits], axis=1
        )
        ranges = ops.max(members, axis=1) - ops.min(members, axis=1)
        return ops.max(ranges, axis=-1, keepdims=True)

    def compute_output_shape(
        self, input_shapes: list[tuple[int | None, ...]]
    ) -> tuple[int | None, ...]:
        """Return ``(n, 1)``."""
        return (input_shapes[0][0], 1)

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation."""
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="magorder")
class BlendWithTrees(keras.layers.Layer):  # type: ignore[misc]
    """Networks' logits and trees' log-probabilities, weighted (`tree_blend.blend`).

    Args:
        network_share: The networks' weight, in ``[0, 1]``.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, network_share: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= network_share <= 1.0:
            raise ValueError(f"network_share must be in [0, 1], got {network_share=}")
        self.network_share = float(network_share)

    def call(self, inputs: list[Any]) -> Any:
        """Return ``share · log_softmax(network logits) + (1 - share) · trees``."""
        network_logits, tree_log_probabilities = inputs
        networks = keras.ops.log_softmax(network_logits, axis=-1)
        return self.network_share * networks + (1.0 - self.network_share) * tree_log_probabilities

    def compute_output_shape(
        self, input_shapes: list[tuple[int | None, ...]]
    ) -> tuple[int | None, ...]:
        """Return the networks' logits' shape."""
        return input_shapes[0]

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation."""
        return {**super().get_config(), "network_share": self.network_share}


def with_probabilities_and_spread(
    members: tuple[keras.Model, ...],
    temperature: float,
    *,
    trees: keras.Model | None = None,
    network_share: float = 1.0,
    with_spread: bool = True,
) -> keras.Model:
    """The served model of an ensemble: probabilities of the mean logits, and the spread.

    With ``trees``, the logits are ``network_share · log_softmax(mean member logits) + (1 -
    network_share) · trees`` (`model_training.tree_blend.blend`), and each member is blended
    with the same trees before the spread is taken.

    Args:
        members: Logits models from `build_logits_model`, trained (one gives a spread of 0).
        temperature: The calibration temperature.
        trees: Raw features to the trees' class log-probabilities
            (`model_training.compiled_trees.tree_log_probability_model`), or None.
        network_share: The networks' weight in the blend with the trees.
        with_spread: False leaves the spread out.

    Returns:
        A model mapping ``(n, 119)`` features to ``(n, 5)``: the four calibrated
        probabilities, then the members' spread (`MemberSpread`); ``(n, 4)`` without it.
    """
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    logits = [member(features) for member in members]
    mean = logits[0] if len(logits) == 1 else keras.layers.Average(name="mean_logits")(logits)
    if trees is not None:
        tree_log_probabilities = trees(features)
        blended = BlendWithTrees(network_share=network_share, name="blend_with_trees")
        mean = blended([mean, tree_log_probabilities])
        logits = [blended([member, tree_log_probabilities]) for member in logits]
    probabilities = TemperatureSoftmax(temperature=temperature, name="probabilities")(mean)
    if not with_spread:
        return keras.Model(features, probabilities, name="magorder_served")
    spread = MemberSpread(temperature=temperature, name="member_spread")(logits)
    outputs = keras.layers.Concatenate(name="outputs")([probabilities, spread])
    return keras.Model(features, outputs, name="magorder_served")


def build_model(config: ModelConfig) -> keras.Model:
    """Build an untrained served model (placeholder and tests): features to probabilities.

    Args:
        config: The architecture and its size.

    Returns:
        A Keras model mapping ``(n, 119)`` float32 features to ``(n, 4)`` probabilities.
    """
    return with_probabilities(build_logits_model(config))
