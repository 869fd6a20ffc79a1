"""What every head's data is: labelled rows with features, their cleaning report, their files.

Each head reads its own snapshot (``model_training.<head>.data``); all of them check the file
the same way (`read_checked_csv`), drop unfit rows counting each by its reason (`RowFilter`),
and hand on `LabelledData`: rows, the 119-vectors of `app.core.features` and labels.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.core.features import FeatureMatrix
from app.core.model_card import MagneticOrdering

CLASSES: tuple[MagneticOrdering, ...] = tuple(MagneticOrdering)
"""The Materials Project head's classes: the default of the scores and of the baselines."""


class SnapshotError(ValueError):
    """The snapshot file cannot be used: missing, unreadable, or not in the snapshot schema."""


@dataclass(frozen=True, slots=True)
class CleaningReport:
    """What loading and cleaning did to a snapshot; it goes into the data card.

    Attributes:
        path: The snapshot file.
        sha256: SHA-256 of the file's bytes.
        rows_read: Rows in the file.
        dropped: Number of rows dropped, by reason.
        rows_kept: Rows left for training and evaluation.
        class_counts: Rows kept per ordering.
        label_source_counts: Rows kept per ``label_source``.
        n_formulas: Distinct reduced formulas among the rows kept.
        contradicted_rule_elements: Elements whose rule-assigned NM labels were dropped, with
            the number of MP's own labels that judged the rule and how many of them are NM.
    """

    path: str
    sha256: str
    rows_read: int
    dropped: dict[str, int]
    rows_kept: int
    class_counts: dict[str, int]
    label_source_counts: dict[str, int]
    n_formulas: int
    contradicted_rule_elements: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "rows_read": self.rows_read,
            "dropped": dict(self.dropped),
            "rows_kept": self.rows_kept,
            "class_counts": dict(self.class_counts),
            "label_source_counts": dict(self.label_source_counts),
            "n_formulas": self.n_formulas,
            "contradicted_rule_elements": {
                element: list(counts) for element, counts in self.contradicted_rule_elements.items()
            },
        }


@dataclass(frozen=True)
class LabelledData:
    """Clean rows with their features and labels, aligned by position.

    Attributes:
        rows: One row per material: the snapshot's columns plus ``reduced_formula``.
        features: ``(n, 119)`` float32 matrix built by `app.core.features`.
        labels: ``(n,)`` class index of each row in `CLASSES` order.
        report: What cleaning did.
    """

    rows: pd.DataFrame
    features: FeatureMatrix
    labels: npt.NDArray[np.int64]
    report: CleaningReport = field(repr=False)

    def subset(self, positions: npt.NDArray[np.int64]) -> LabelledData:
        """Return the rows at ``positions``, features and labels with them."""
        return LabelledData(
            rows=self.rows.iloc[positions].reset_index(drop=True),
            features=self.features[positions],
            labels=self.labels[positions],
            report=self.report,
        )


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checked_csv(path: Path, required: tuple[str, ...], *, what: str) -> pd.DataFrame:
    """Read a CSV of text columns and check that it has the columns and a unique record id.

    Args:
        path: The CSV file.
        required: Columns it must have (``record_id`` among them).
        what: What the file is, for messages (``snapshot``, ``experimental snapshot``).

    Returns:
        The rows as read, every column as text, NaN where a cell is empty.

    Raises:
        SnapshotError: The file is missing or unreadable, a required column is missing, or
            ``record_id`` is not a unique key.
    """
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,  # 'NA' is sodium's formula half, not a missing value
            na_values=[""],
        )
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"cannot read {what} {path}: {exc}") from exc
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise SnapshotError(
            f"{what} {path} lacks column(s) {', '.join(missing)}; expected {', '.join(required)}"
        )
    if frame["record_id"].isna().any() or frame["record_id"].duplicated().any():
        raise SnapshotError(f"{what} {path}: record_id must be present and unique in every row")
    return frame


class RowFilter:
    """Rows being cleaned, and how many were dropped for each reason.

    Attributes:
        rows: The rows still kept.
        dropped: Rows dropped so far, by reason.
    """

    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows = rows
        self.dropped: Counter[str] = Counter()

    def drop(self, mask: pd.Series, reason: str) -> None:
        """Drop the kept rows where ``mask`` holds, counting them under ``reason``."""
        count = int(mask.sum())
        if count:
            self.dropped[reason] += count
            self.rows = self.rows[~mask]

    def report(
        self,
        *,
        path: Path,
        sha256: str,
        rows_read: int,
        labels: npt.NDArray[np.int64],
        classes: Sequence[object],
        label_sources: pd.Series,
        n_formulas: int,
        contradicted_rule_elements: dict[str, tuple[int, int]] | None = None,
    ) -> CleaningReport:
        """What cleaning did, once the kept rows' ``labels`` (indices of ``classes``) are known.

        Args:
            path: Where the rows came from.
            sha256: The file's checksum.
            rows_read: Rows in the file.
            labels: Class index of each row (or merged record) kept.
            classes: The head's classes, in label order.
            label_sources: The source of each row kept, counted per value.
            n_formulas: Distinct reduced formulas kept.
            contradicted_rule_elements: See `CleaningReport`.

        Returns:
            The report; reasons that dropped nothing are left out.
        """
        return CleaningReport(
            path=str(path),
            sha256=sha256,
            rows_read=rows_read,
            dropped=dict(sorted((k, v) for k, v in self.dropped.items() if v)),
            rows_kept=len(labels),
            class_counts={str(c): int((labels == i).sum()) for i, c in enumerate(classes)},
            label_source_counts={
                str(k): int(v) for k, v in label_sources.value_counts().sort_index().items()
            },
            n_formulas=n_formulas,
            contradicted_rule_elements=contradicted_rule_elements or {},
        )


def load_clean(
    path: Path,
    *,
    read: Callable[[Path], pd.DataFrame],
    clean: Callable[..., LabelledData],
    what: str,
    unit: str,
) -> LabelledData:
    """Read, validate and clean a snapshot with a head's own reader and cleaner.

    Args:
        path: The CSV file.
        read: Reads and checks it (`read_checked_csv` with the head's columns).
        clean: Cleans the rows read: ``clean(frame, path=..., sha256=...)``.
        what: What the file is, for messages (``snapshot``, ``experimental snapshot``).
        unit: What one kept row is, for messages (``row``, ``record``).

    Returns:
        The clean rows, features and labels, with the cleaning report.

    Raises:
        SnapshotError: The file is missing, unreadable or not in the schema, or nothing
            survives cleaning.
    """
    data = clean(read(path), path=path, sha256=file_sha256(path))
    if data.report.rows_kept == 0:
        raise SnapshotError(f"{what} {path}: no usable {unit} left after cleaning")
    return data
