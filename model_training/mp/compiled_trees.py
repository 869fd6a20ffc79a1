"""LightGBM's trees compiled into the graph, so that the SavedModel carries them.

A booster whose trees are capped at a depth becomes perfect binary trees in heap order: node
``i`` has children ``2i + 1`` and ``2i + 2``, a leaf above the bottom level is copied to every
leaf below it and its tests (threshold +inf) always go left. Each level is then three gathers
(the node's feature, the row's value of it, the node's threshold), a comparison and an index
step, the same for every row; TensorFlow and LiteRT run it with built-in operators.

The graph computes the derived features itself, and its sums run in another order than the
eager computation the trees were fitted on: values equal in exact arithmetic differ in their
last bits. LightGBM puts some thresholds between such neighbours, so a row would go either way
depending on the runtime. `snap_thresholds` moves those thresholds into the gap beside the
cluster of nearly equal training values, on the side most of the cluster's rows took.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from app.core.features import N_FEATURES
from model_training.mp.network import N_CLASSES
from model_training.network import CompositionFeatures

SNAP_RELATIVE_TOLERANCE = 4e-6
"""Training values closer than this (relative; about 32 float32 steps) are one cluster."""
_SNAP_ABSOLUTE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class TreeArrays:
    """A booster's trees as perfect binary trees of one depth.

    Attributes:
        depth: Levels of tests in every tree.
        feature: ``(trees, 2**depth - 1)`` feature index tested at each node.
        threshold: ``(trees, 2**depth - 1)`` thresholds, rounded down to float32: a float32
            value is at most the float32 threshold exactly when it is at most LightGBM's
            double one. A row goes right when its value is above.
        leaf: ``(trees, 2**depth)`` leaf values.
        column: ``(trees,)`` output column each tree adds to.
    """

    depth: int
    feature: npt.NDArray[np.int32]
    threshold: npt.NDArray[np.float32]
    leaf: npt.NDArray[np.float32]
    column: npt.NDArray[np.int32]

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.column)


def _float32_at_most(bound: float) -> np.float32:
    """The largest float32 not above ``bound`` (±inf beyond float32's range)."""
    with np.errstate(over="ignore"):
        rounded = np.float32(bound)
    if float(rounded) > bound:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return rounded


def _fill(node: dict[str, Any], heap: int, level: int, tree: tuple[Any, Any, Any]) -> None:
    feature, threshold, leaf = tree
    n_internal = len(feature)
    if "split_index" not in node:
        first, last = heap, heap
        while first < n_internal:
            first, last = 2 * first + 1, 2 * last + 2
        leaf[first - n_internal : last - n_internal + 1] = node["leaf_value"]
        return
    if heap >= n_internal:
        raise ValueError(f"a tree is deeper than {level} levels: cap max_depth when fitting")
    if node["decision_type"] != "<=" or node["missing_type"] not in ("None", "NaN"):
        raise ValueError(
            f"cannot compile a {node['decision_type']!r} split with missing type "
            f"{node['missing_type']!r}: only numeric '<=' splits are supported"
        )
    feature[heap] = node["split_feature"]
    threshold[heap] = _float32_at_most(float(node["threshold"]))
    _fill(node["left_child"], 2 * heap + 1, level + 1, tree)
    _fill(node["right_child"], 2 * heap + 2, level + 1, tree)


def tree_arrays(dump: dict[str, Any], depth: int, *, first_column: int = 0) -> TreeArrays:
    """Compile a LightGBM model dump into perfect trees.

    Args:
        dump: ``Booster.dump_model()`` of a model whose trees are at most ``depth`` deep
            (``max_depth`` at most ``depth`` when fitting), numeric splits only.
        depth: Levels of every compiled tree.
        first_column: Output column of the dump's first class (several boosters share one
            output matrix, each in its own columns).

    Returns:
        The arrays; tree ``t`` adds to column ``first_column + t % num_class``, as LightGBM
        sums a multiclass model's trees.

    Raises:
        ValueError: If a tree is deeper than ``depth`` or has a split that is not numeric.
    """
    trees = dump["tree_info"]
    feature = np.zeros((len(trees), 2**depth - 1), np.int32)
    threshold = np.full((len(trees), 2**depth - 1), np.inf, np.float32)
    leaf = np.zeros((len(trees), 2**depth), np.float32)
    for index, tree in enumerate(trees):
        _fill(tree["tree_structure"], 0, 0, (feature[index], threshold[index], leaf[index]))
    column = first_column + np.arange(len(trees), dtype=np.int32) % dump["num_class"]
    return TreeArrays(depth, feature, threshold, leaf, column.astype(np.int32))


def _snapped(threshold: np.float32, values: npt.NDArray[np.float32], column: Any) -> np.float32:
    """The threshold moved out of a cluster of nearly equal training values, if inside one."""

    def close(a: float, b: float) -> bool:
        scale = max(abs(a), abs(b))
        return b - a <= SNAP_RELATIVE_TOLERANCE * scale + _SNAP_ABSOLUTE_TOLERANCE

    above = int(np.searchsorted(values, threshold, side="right"))
    if above in (0, len(values)) or not close(values[above - 1], values[above]):
        return threshold
    low, high = above - 1, above
    while low > 0 and close(values[low - 1], values[low]):
        low -= 1
    while high < len(values) - 1 and close(values[high], values[high + 1]):
        high += 1
    went_left = int(np.count_nonzero((column >= values[low]) & (column <= threshold)))
    went_right = int(np.count_nonzero((column > threshold) & (column <= values[high])))
    if went_left >= went_right:  # the whole cluster left: the threshold in the gap above it
        if high == len(values) - 1:
            return np.float32(np.inf)
        return np.float32((float(values[high]) + float(values[high + 1])) / 2)
    if low == 0:
        return np.float32(np.nextafter(values[0], np.float32(-np.inf)))
    return np.float32((float(values[low - 1]) + float(values[low])) / 2)


def snap_thresholds(
    arrays: TreeArrays, train_rows: npt.NDArray[np.float32]
) -> tuple[TreeArrays, int]:
    """Move every threshold that splits a cluster of nearly equal training values.

    Args:
        arrays: The compiled trees.
        train_rows: ``(n, features)`` rows the trees were fitted on.

    Returns:
        The trees with each such threshold moved to the middle of the gap beside its
        cluster, so the whole cluster goes the way most of its training rows went; and how
        many thresholds moved.
    """
    threshold = arrays.threshold.copy()
    values = [np.unique(column) for column in train_rows.T]
    moved = 0
    for tree, node in zip(*np.nonzero(np.isfinite(threshold)), strict=True):
        feature = arrays.feature[tree, node]
        new = _snapped(threshold[tree, node], values[feature], train_rows[:, feature])
        if new != threshold[tree, node]:
            threshold[tree, node] = new
            moved += 1
    return replace(arrays, threshold=threshold), moved


def concatenate(arrays: list[TreeArrays]) -> TreeArrays:
    """Put the trees of several boosters of one depth into one set."""
    depths = {a.depth for a in arrays}
    if len(depths) != 1:
        raise ValueError(f"every set must have one depth, got {sorted(depths)}")
    return TreeArrays(
        depths.pop(),
        np.concatenate([a.feature for a in arrays]),
        np.concatenate([a.threshold for a in arrays]),
        np.concatenate([a.leaf for a in arrays]),
        np.concatenate([a.column for a in arrays]),
    )


@keras.saving.register_keras_serializable(package="magorder")
class CompiledTrees(keras.layers.Layer):  # type: ignore[misc]
    """Perfect binary trees (`TreeArrays`) run on feature rows: ``(n, features)`` to sums.

    The arrays are non-trainable weights, saved with the model.

    Args:
        n_trees: Number of trees.
        depth: Levels of every tree.
        n_outputs: Output columns; each tree adds its leaf to one.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, *, n_trees: int, depth: int, n_outputs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_trees, self.depth, self.n_outputs = n_trees, depth, n_outputs
        n_internal = 2**depth - 1
        self._node_offset = keras.ops.convert_to_tensor(
            np.arange(n_trees, dtype=np.int32) * n_internal
        )
        # A node index at the bottom level, minus n_internal, is the leaf's index in its tree.
        self._leaf_offset = keras.ops.convert_to_tensor(
            np.arange(n_trees, dtype=np.int32) * 2**depth - n_internal
        )
        self.feature = self.add_weight(
            shape=(n_trees * n_internal,),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="feature",
        )
        self.threshold = self.add_weight(
            shape=(n_trees * n_internal,), initializer="zeros", trainable=False, name="threshold"
        )
        self.leaf = self.add_weight(
            shape=(n_trees * 2**depth,), initializer="zeros", trainable=False, name="leaf"
        )
        self.to_column = self.add_weight(
            shape=(n_trees, n_outputs), initializer="zeros", trainable=False, name="to_column"
        )

    @classmethod
    def from_arrays(cls, arrays: TreeArrays, n_outputs: int, **kwargs: Any) -> CompiledTrees:
        """The layer holding ``arrays``, its columns ``0 .. n_outputs - 1``."""
        layer = cls(n_trees=arrays.n_trees, depth=arrays.depth, n_outputs=n_outputs, **kwargs)
        layer.feature.assign(arrays.feature.reshape(-1))
        layer.threshold.assign(arrays.threshold.reshape(-1))
        layer.leaf.assign(arrays.leaf.reshape(-1))
        layer.to_column.assign(np.eye(n_outputs, dtype=np.float32)[arrays.column])
        return layer

    def call(self, rows: Any) -> Any:
        """Return ``(n, n_outputs)``: per column, the sum of its trees' leaves."""
        ops = keras.ops
        n_rows = ops.shape(rows)[0]
        values = ops.reshape(rows, (-1,))
        row_offset = ops.expand_dims(ops.arange(n_rows, dtype="int32") * rows.shape[-1], 1)
        node = ops.zeros((n_rows, self.n_trees), dtype="int32")
        for _ in range(self.depth):
            index = node + self._node_offset
            value = ops.take(values, ops.take(self.feature, index) + row_offset)
            node = 2 * node + 1 + ops.cast(value > ops.take(self.threshold, index), "int32")
        return ops.matmul(ops.take(self.leaf, node + self._leaf_offset), self.to_column)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Return ``(n, n_outputs)``."""
        return (input_shape[0], self.n_outputs)

    def get_config(self) -> dict[str, Any]:
        """Return the layer's configuration for Keras serialisation (weights apart)."""
        return {
            **super().get_config(),
            "n_trees": self.n_trees,
            "depth": self.depth,
            "n_outputs": self.n_outputs,
        }


def tree_log_probability_model(boosters: list[TreeArrays], name: str = "trees") -> keras.Model:
    """Raw 119-vectors to the mean of the boosters' class log-probabilities.

    Args:
        boosters: One `TreeArrays` per multiclass booster fitted on `derived_features`, in
            columns ``4k .. 4k + 3`` (`tree_arrays` with ``first_column=4 * k``).
        name: The model's name.

    Returns:
        A model mapping ``(n, 119)`` float32 features to ``(n, 4)``: each booster's raw
        scores through a log-softmax, averaged over the boosters.
    """
    features = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    derived = CompositionFeatures(name="tree_composition")(features)
    width = len(boosters) * N_CLASSES
    raw = CompiledTrees.from_arrays(concatenate(boosters), width, name="compiled_trees")(derived)
    per_booster = keras.ops.reshape(raw, (-1, len(boosters), N_CLASSES))
    mean = keras.ops.mean(keras.ops.log_softmax(per_booster, axis=-1), axis=1)
    return keras.Model(features, mean, name=name)
