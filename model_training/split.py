"""Train / validation / test splits, grouped by composition and saved by record id.

Polymorphs of one formula share most of what the model sees, so a row split lets the model
look up the answer for test formulas it saw in training. Every split here keeps all rows of a
reduced formula on one side, stratified by ordering as far as the groups allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from model_training.data import LabelledData, SnapshotError

SPLIT_NAMES = ("train", "validation", "test")


class SplitKind(StrEnum):
    """How rows are assigned to the three parts."""

    GROUPED = "grouped"
    """All rows of one reduced formula on the same side (the honest split)."""
    RANDOM = "random"
    """Row by row, polymorphs on both sides: shown only to measure the leakage it causes."""


@dataclass(frozen=True, slots=True)
class Split:
    """Row positions of the three parts of a `LabelledData`.

    Attributes:
        kind: How the rows were assigned.
        train: Positions of the training rows.
        validation: Positions of the validation rows (early stopping, calibration).
        test: Positions of the test rows (reported figures only).
    """

    kind: SplitKind
    train: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]

    def parts(self, data: LabelledData) -> tuple[LabelledData, LabelledData, LabelledData]:
        """Return the train, validation and test rows of ``data``."""
        return data.subset(self.train), data.subset(self.validation), data.subset(self.test)

    def sizes(self) -> dict[str, int]:
        """Return the number of rows of each part, by name (`SPLIT_NAMES`)."""
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}


def _one_fold(
    labels: npt.NDArray[np.int64],
    groups: npt.NDArray[np.object_] | None,
    n_folds: int,
    seed: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Positions outside and inside the first of ``n_folds`` stratified folds."""
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        rest, fold = next(splitter.split(np.zeros(len(labels)), labels))
    else:
        grouped = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        rest, fold = next(grouped.split(np.zeros(len(labels)), labels, groups))
    return rest.astype(np.int64), fold.astype(np.int64)


def split_data(
    data: LabelledData,
    *,
    kind: SplitKind = SplitKind.GROUPED,
    test_fraction: float = 0.1,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """Split rows into train, validation and test parts.

    Args:
        data: The clean rows.
        kind: Grouped by reduced formula (default) or row by row.
        test_fraction: Share of rows for testing, roughly (whole groups move together).
        validation_fraction: Share of rows for validation, roughly.
        seed: Seed of the assignment; the same seed gives the same split.

    Returns:
        The positions of each part, sorted.

    Raises:
        ValueError: The fractions leave no room for training.
        SnapshotError: The rows are too few to split (a class or the formulas do not reach
            the number of folds).
    """
    if not (0 < test_fraction < 1 and 0 < validation_fraction < 1) or (
        test_fraction + validation_fraction >= 0.9
    ):
        raise ValueError(f"bad fractions: {test_fraction=}, {validation_fraction=}")
    groups = data.rows["reduced_formula"].to_numpy() if kind is SplitKind.GROUPED else None
    try:
        rest, test = _one_fold(data.labels, groups, round(1 / test_fraction), seed)
        share = validation_fraction / (1 - test_fraction)
        rest_groups = None if groups is None else groups[rest]
        train_in_rest, validation_in_rest = _one_fold(
            data.labels[rest], rest_groups, round(1 / share), seed + 1
        )
    except ValueError as exc:  # scikit-learn: fewer members than folds
        raise SnapshotError(
            f"cannot split {len(data.labels)} rows ({data.report.n_formulas} formulas) into "
            f"train, validation and test parts: {exc}"
        ) from exc
    return Split(
        kind=kind,
        train=np.sort(rest[train_in_rest]),
        validation=np.sort(rest[validation_in_rest]),
        test=np.sort(test),
    )


def save_split(split: Split, data: LabelledData, path: Path) -> Path:
    """Write a split as a CSV of ``record_id,part`` so every model is scored on the same rows.

    Args:
        split: The split.
        data: The rows it indexes.
        path: The CSV file to write.

    Returns:
        ``path``.
    """
    parts = np.empty(len(data.labels), dtype=object)
    for name in SPLIT_NAMES:
        parts[getattr(split, name)] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"record_id": data.rows["record_id"], "part": parts}).to_csv(path, index=False)
    return path


def load_split(path: Path, data: LabelledData, kind: SplitKind = SplitKind.GROUPED) -> Split:
    """Read a split saved by `save_split` back onto the same clean rows.

    Args:
        path: The CSV written by `save_split`.
        data: The clean rows of the same snapshot.
        kind: How the saved split was made.

    Returns:
        The split.

    Raises:
        SnapshotError: The file cannot be read or does not assign exactly the rows of
            ``data``.
    """
    try:
        saved = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"cannot read split {path}: {exc}") from exc
    position = pd.Series(np.arange(len(data.labels)), index=data.rows["record_id"])
    if set(saved["record_id"]) != set(position.index) or len(saved) != len(position):
        raise SnapshotError(f"split {path} does not cover exactly the rows of this snapshot")
    parts = {
        name: np.sort(position[saved.loc[saved["part"] == name, "record_id"]].to_numpy())
        for name in SPLIT_NAMES
    }
    return Split(kind=kind, **{name: p.astype(np.int64) for name, p in parts.items()})
