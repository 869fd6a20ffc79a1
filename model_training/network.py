"""What every head's network is built of: derived features computed inside the model.

Every model takes the raw 119-vector of `app.core.features`, so the API contract stays the same
whatever the network derives from it. The derived features are a Keras layer, so the exported
SavedModel carries them and the service passes only the raw vector. The hidden stack and the
density-free network (derived features beside an element embedding, then the hidden stack)
that the experiment head and the density estimator share are built here too; each head's
outputs are its own (``model_training.<head>.network``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np
import numpy.typing as npt

from app.core.features import N_ELEMENTS, N_FEATURES, element_symbols
from model_training.element_properties import (
    PROPERTY_NAMES,
    atomic_masses,
    charge_tables,
    element_property_table,
)

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


class DensityFreeShape(HiddenStack, Protocol):
    """What `build_density_free_network` reads of a head's configuration."""

    @property
    def clip(self) -> float | None:
        """Standardised features are clipped to ``[-clip, clip]``; None: not."""

    @property
    def element_embedding(self) -> int:
        """Width of a learnt vector per element, averaged by atomic fraction (0: none)."""

    @property
    def seed(self) -> int:
        """Seed of initialisation."""


def build_density_free_network(
    config: DensityFreeShape,
    *,
    outputs: Callable[[Any], Any],
    name: str,
    feature_mean: npt.NDArray[np.float32] | None = None,
    feature_variance: npt.NDArray[np.float32] | None = None,
    feature_quantiles: npt.NDArray[np.float32] | None = None,
) -> keras.Model:
    """Build an untrained network that never reads density, with a head's own outputs.

    The raw vector goes through `density_free_inputs` (with the embedding and, given
    quantiles, the ranks) and `hidden_layers`; ``outputs`` puts the head's own layers on top.

    Args:
        config: Its shape and seed.
        outputs: The head's output layers, from the last hidden layer's tensor to the
            model's output (a tensor or a dict of them).
        name: The model's name.
        feature_mean: Training-split mean of each density-free derived feature.
        feature_variance: Their training-split variance.
        feature_quantiles: Their training-split quantiles, for their ranks.

    Returns:
        A Keras model from ``(n, 119)`` features to what ``outputs`` returns.
    """
    keras.utils.set_random_seed(config.seed)
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    x = density_free_inputs(
        features,
        feature_mean=feature_mean,
        feature_variance=feature_variance,
        clip=config.clip,
        element_embedding=config.element_embedding,
        feature_quantiles=feature_quantiles,
    )
    return keras.Model(features, outputs(hidden_layers(x, config)), name=name)
