"""Snapshot loading and cleaning, the grouped split, and the shared featurizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.features import featurize
from model_training.data import SnapshotError, file_sha256
from model_training.mp.data import load_labelled_data, read_snapshot
from model_training.split import SplitKind, load_split, save_split, split_data
from tests.snapshot_fixture import BAD_ROWS, write_snapshot


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_snapshot(
        tmp_path_factory.mktemp("data") / "snapshot.csv", rows_per_class=30, bad_rows=True
    )


def test_cleaning_drops_and_counts_every_bad_row_by_reason(snapshot: Path) -> None:
    data = load_labelled_data(snapshot)
    report = data.report
    expected = {reason: 1 for _, reason in BAD_ROWS} | {"duplicate_material": 1}
    assert report.dropped == expected
    assert report.rows_read == report.rows_kept + sum(expected.values())
    assert report.sha256 == file_sha256(snapshot)
    assert set(data.rows["ordering"]) == {"FM", "NM", "FiM", "AFM"}
    assert not data.rows["record_id"].str.startswith("bad").any()
    # The duplicated material keeps the row with MP's own label.
    duplicated = data.rows[data.rows["material_id"] == "mp-900000"]
    assert duplicated["label_source"].tolist() == ["mp_label_2025"]


def test_training_features_are_exactly_the_services(snapshot: Path) -> None:
    data = load_labelled_data(snapshot)
    expected = np.stack(
        [
            featurize(f, d)
            for f, d in zip(data.rows["formula_pretty"], data.rows["density"], strict=True)
        ]
    )
    np.testing.assert_array_equal(data.features, expected)
    assert data.features.dtype == np.float32


def test_na_is_read_as_a_formula_not_a_missing_value(tmp_path: Path) -> None:
    # pandas reads 'NA' as missing by default; sodium's symbol must survive.
    path = tmp_path / "na.csv"
    path.write_text(
        "record_id,material_id,formula_pretty,density,ordering,label_source,source\n"
        "r1,,Na,0.97,NM,mp_label_2024,x\n",
        encoding="utf-8",
    )
    assert load_labelled_data(path).rows["reduced_formula"].tolist() == ["Na"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("record_id,formula_pretty,density\nr1,Fe,7.8\n", "lacks column"),
        (
            "record_id,material_id,formula_pretty,density,ordering,label_source,source\n"
            "r1,,Fe,7.8,FM,x,y\nr1,,Ni,8.9,FM,x,y\n",
            "unique",
        ),
    ],
)
def test_read_snapshot_refuses_a_wrong_schema(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SnapshotError, match=message):
        read_snapshot(path)


def test_missing_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        load_labelled_data(tmp_path / "absent.csv")


def test_grouped_split_keeps_every_formula_on_one_side(snapshot: Path) -> None:
    data = load_labelled_data(snapshot)
    split = split_data(data, seed=3)
    formulas = {
        name: set(data.rows["reduced_formula"].iloc[getattr(split, name)])
        for name in ("train", "validation", "test")
    }
    assert formulas["train"].isdisjoint(formulas["test"])
    assert formulas["train"].isdisjoint(formulas["validation"])
    assert formulas["validation"].isdisjoint(formulas["test"])
    positions = np.concatenate([split.train, split.validation, split.test])
    assert sorted(positions.tolist()) == list(range(len(data.labels)))
    # Every class reaches the test part (stratified as far as the groups allow).
    assert set(data.labels[split.test].tolist()) == {0, 1, 2, 3}


def test_split_is_reproducible_and_round_trips_through_its_file(
    snapshot: Path, tmp_path: Path
) -> None:
    data = load_labelled_data(snapshot)
    first, again = split_data(data, seed=5), split_data(data, seed=5)
    np.testing.assert_array_equal(first.test, again.test)
    path = save_split(first, data, tmp_path / "split.csv")
    assert set(pd.read_csv(path)["part"]) == {"train", "validation", "test"}
    loaded = load_split(path, data)
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(first, name))


def test_a_random_split_does_put_polymorphs_on_both_sides(snapshot: Path) -> None:
    # The leakage the grouped split exists to prevent, shown on the same data.
    data = load_labelled_data(snapshot)
    split = split_data(data, kind=SplitKind.RANDOM, seed=0, test_fraction=0.3)
    train = set(data.rows["reduced_formula"].iloc[split.train])
    test = set(data.rows["reduced_formula"].iloc[split.test])
    assert train & test


def test_too_few_rows_to_split_is_a_clear_error(tmp_path: Path) -> None:
    data = load_labelled_data(write_snapshot(tmp_path / "tiny.csv", rows_per_class=2))
    with pytest.raises(SnapshotError, match="cannot split"):
        split_data(data)


def test_split_of_another_snapshot_is_refused(snapshot: Path, tmp_path: Path) -> None:
    data = load_labelled_data(snapshot)
    path = save_split(split_data(data), data, tmp_path / "split.csv")
    other = load_labelled_data(write_snapshot(tmp_path / "other.csv", rows_per_class=10, seed=9))
    with pytest.raises(SnapshotError, match="does not cover"):
        load_split(path, other)
