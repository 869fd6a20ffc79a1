"""LightGBM's trees compiled into the graph, and the share they get beside the networks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import lightgbm
import numpy as np
import numpy.typing as npt
import pytest

from model_training.mp.compiled_trees import (
    CompiledTrees,
    TreeArrays,
    concatenate,
    snap_thresholds,
    tree_arrays,
    tree_log_probability_model,
)
from model_training.mp.data import load_labelled_data
from model_training.mp.tree_blend import SHARE_GRID, blend, choose_share
from model_training.network import derived_features
from tests.snapshot_fixture import write_snapshot


class Fitted(NamedTuple):
    """Raw vectors, their derived features, and boosters fitted on those."""

    features: npt.NDArray[np.float32]
    rows: npt.NDArray[np.float32]
    boosters: list[Any]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    """Two boosters, trees at most 4 deep, on the fixture snapshot's derived features."""
    snapshot: Path = write_snapshot(tmp_path_factory.mktemp("trees") / "s.csv", rows_per_class=60)
    data = load_labelled_data(snapshot)
    rows = derived_features(data.features)
    boosters = [
        lightgbm.LGBMClassifier(
            n_estimators=20, max_depth=4, num_leaves=12, min_child_samples=5, subsample=0.8,
            subsample_freq=1, random_state=seed, verbose=-1
        ).fit(rows, data.labels)
        for seed in (0, 1)
    ]  # fmt: skip
    return Fitted(data.features, rows, boosters)


def _compiled(fitted: Fitted, depth: int) -> list[TreeArrays]:
    return [
        tree_arrays(booster.booster_.dump_model(), depth, first_column=4 * k)
        for k, booster in enumerate(fitted.boosters)
    ]


def test_compiled_trees_give_lightgbm_raw_scores(fitted: Fitted) -> None:
    # Compiled deeper than they are: the shallow leaves are copied down.
    layer = CompiledTrees.from_arrays(concatenate(_compiled(fitted, 5)), 8)
    compiled = np.asarray(layer(fitted.rows))
    for k, booster in enumerate(fitted.boosters):
        expected = booster.booster_.predict(fitted.rows, raw_score=True)
        np.testing.assert_allclose(compiled[:, 4 * k : 4 * k + 4], expected, atol=1e-5)


def test_the_tree_model_reads_raw_vectors(fitted: Fitted) -> None:
    model = tree_log_probability_model(_compiled(fitted, 4))
    expected = np.mean([np.log(b.predict_proba(fitted.rows)) for b in fitted.boosters], axis=0)
    np.testing.assert_allclose(model.predict(fitted.features, verbose=0), expected, atol=1e-4)


def test_a_tree_deeper_than_the_cap_is_refused(fitted: Fitted) -> None:
    with pytest.raises(ValueError, match="deeper"):
        _compiled(fitted, 2)


def _one_split(threshold: float) -> TreeArrays:
    return TreeArrays(
        1,
        np.zeros((1, 1), np.int32),
        np.full((1, 1), threshold, np.float32),
        np.asarray([[-1.0, 1.0]], np.float32),
        np.zeros(1, np.int32),
    )


def test_a_threshold_inside_a_cluster_of_nearly_equal_values_moves_out_of_it() -> None:
    # 0.3 computed two ways: equal in exact arithmetic, a float32 step apart.
    low = np.float32(0.3)
    high = np.nextafter(low, np.float32(1.0))
    column = np.asarray([0.1, low, low, low, high, 0.5], np.float32)[:, None]
    snapped, moved = snap_thresholds(_one_split(float(low)), column)
    assert moved == 1
    # Three of the cluster's four rows went left: all of it now goes left, the threshold in
    # the middle of the gap above it.
    assert snapped.threshold[0, 0] == pytest.approx(0.4)
    layer = CompiledTrees.from_arrays(snapped, 1)
    assert np.asarray(layer(np.asarray([[low], [high]], np.float32)))[:, 0].tolist() == [-1, -1]
    kept, moved = snap_thresholds(_one_split(0.2), column)  # in a wide gap: stays
    assert moved == 0
    assert kept.threshold[0, 0] == np.float32(0.2)


def test_the_share_goes_to_the_networks_unless_the_trees_help() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    networks = rng.normal(size=(400, 4)).astype(np.float32)
    networks[np.arange(400), labels] += 1.0  # informative, not perfect
    useless = np.full((400, 4), np.log(0.25), np.float32)
    share, scores = choose_share(networks, useless, labels)
    assert share == 1.0
    assert set(scores) == set(SHARE_GRID)
    perfect = np.log(np.full((400, 4), 0.01, np.float32))
    perfect[np.arange(400), labels] = np.log(0.97)
    share, scores = choose_share(networks, perfect, labels)
    assert share < 1.0
    assert scores[share] == 1.0 > scores[1.0]
    assert (blend(networks, perfect, share).argmax(axis=1) == labels).all()
