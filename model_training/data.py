"""Snapshots of Materials Project labels: their schema, loading, cleaning and features.

A snapshot is a CSV with one row per material, in the schema of the shared snapshot and of
what ``python -m model_training fetch`` writes. Loading validates the schema; cleaning drops
what a materials scientist would not train on and counts every dropped row by its reason;
features come from `app.core.features`, the exact code the service runs.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.core.errors import InvalidDensityError, InvalidFormulaError
from app.core.features import FeatureMatrix, ParsedCompound, parse_compound, vectorize
from app.core.model_card import MagneticOrdering
from model_training.rule_labels import contradicted_elements, contradicted_rule_labels

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = (
    "record_id",
    "material_id",
    "formula_pretty",
    "density",
    "ordering",
    "label_source",
    "source",
)
"""Columns every snapshot has, in this order; a fetched snapshot may add more after them."""

CLASSES: tuple[MagneticOrdering, ...] = tuple(MagneticOrdering)
RULE_LABEL_PREFIX = "rule_"
"""``label_source`` values starting with this are labels assigned by a rule, not by MP."""

# When one material appears twice, keep the row whose label is MP's own stored label.
_EXACT_LABEL_PREFIX = "mp_label_"


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


def read_snapshot(path: Path) -> pd.DataFrame:
    """Read a snapshot CSV and check its schema.

    Args:
        path: The CSV file.

    Returns:
        The rows as read, every column as text except ``density`` (float, NaN when missing).

    Raises:
        SnapshotError: The file is missing or unreadable, a required column is missing, or
            ``record_id`` is not a unique key.
    """
    frame = read_checked_csv(path, REQUIRED_COLUMNS, what="snapshot")
    frame["density"] = pd.to_numeric(frame["density"], errors="coerce")
    return frame


def _is_true(values: pd.Series) -> pd.Series:
    return values.fillna("").astype(str).str.strip().str.lower().isin({"true", "1", "yes"})


def _parse_rows(frame: pd.DataFrame) -> tuple[list[ParsedCompound | None], list[str | None]]:
    """Parse every row with the service's own parser; say why each failing row fails."""
    compounds: list[ParsedCompound | None] = []
    reasons: list[str | None] = []
    for formula, density in zip(frame["formula_pretty"], frame["density"], strict=True):
        try:
            compounds.append(parse_compound(str(formula), float(density)))
            reasons.append(None)
        except InvalidFormulaError:
            compounds.append(None)
            reasons.append("unparsable_formula")
        except InvalidDensityError:
            compounds.append(None)
            reasons.append("non_physical_density")
    return compounds, reasons


def clean_snapshot(frame: pd.DataFrame, *, path: Path, sha256: str) -> LabelledData:
    """Drop rows unfit for training, counting each by reason, and build their features.

    Reasons, checked in this order: ``deprecated`` (MP has retired the material),
    ``missing_value`` (no formula, density or ordering), ``unknown_ordering`` (not one of the
    four classes, e.g. MP's ``Unknown``), ``unparsable_formula`` and ``non_physical_density``
    (refused by the service's own parser: the model is never trained on what it could not
    serve), ``duplicate_material`` (the same ``material_id`` twice; MP's stored label wins
    over a derived one), ``rule_label_contradicted`` (an NM label assigned by rule to a
    compound of an element for which MP's own labels contradict the rule; see
    `model_training.rule_labels`).

    Args:
        frame: Rows from `read_snapshot`.
        path: Where they came from, for the report.
        sha256: The file's checksum, for the report.

    Returns:
        The clean rows with their features and labels.
    """
    dropped: Counter[str] = Counter()
    rows = frame.copy()

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal rows
        count = int(mask.sum())
        if count:
            dropped[reason] += count
            rows = rows[~mask]

    if "deprecated" in rows.columns:
        drop(_is_true(rows["deprecated"]), "deprecated")
    drop(
        rows[["formula_pretty", "ordering"]].isna().any(axis=1) | rows["density"].isna(),
        "missing_value",
    )
    drop(~rows["ordering"].isin([str(c) for c in CLASSES]), "unknown_ordering")
    compounds, reasons = _parse_rows(rows)
    dropped.update(reason for reason in reasons if reason is not None)
    parsed = [reason is None for reason in reasons]
    kept_compounds = [c for c in compounds if c is not None]
    rows = rows[parsed].assign(
        reduced_formula=[c.reduced_formula for c in kept_compounds],
        _compound=kept_compounds,  # dropped with its row from here on
    )
    priority = (~rows["label_source"].str.startswith(_EXACT_LABEL_PREFIX)).astype(int)
    ranked = rows.assign(_priority=priority).sort_values("_priority", kind="stable")
    duplicate = ranked["material_id"].notna() & ranked["material_id"].duplicated(keep="first")
    drop(duplicate.reindex(rows.index), "duplicate_material")
    contradicted = contradicted_elements(rows)
    drop(contradicted_rule_labels(rows, set(contradicted)), "rule_label_contradicted")
    rows = rows.reset_index(drop=True)
    kept_compounds = rows.pop("_compound").tolist()

    class_index = {str(c): i for i, c in enumerate(CLASSES)}
    labels = rows["ordering"].map(class_index).to_numpy(dtype=np.int64)
    report = CleaningReport(
        path=str(path),
        sha256=sha256,
        rows_read=len(frame),
        dropped=dict(sorted(dropped.items())),
        rows_kept=len(rows),
        class_counts={str(c): int((labels == i).sum()) for i, c in enumerate(CLASSES)},
        label_source_counts={
            str(k): int(v) for k, v in rows["label_source"].value_counts().sort_index().items()
        },
        n_formulas=int(rows["reduced_formula"].nunique()),
        contradicted_rule_elements=contradicted,
    )
    logger.info(
        "snapshot %s: %d rows read, %d kept, dropped %s",
        path,
        report.rows_read,
        report.rows_kept,
        report.dropped or "none",
    )
    return LabelledData(rows=rows, features=vectorize(kept_compounds), labels=labels, report=report)


def load_labelled_data(path: Path) -> LabelledData:
    """Read, validate and clean a snapshot, and build its features.

    Args:
        path: A snapshot CSV.

    Returns:
        Clean rows, features and labels, with the cleaning report.

    Raises:
        SnapshotError: The file is missing, unreadable or not in the snapshot schema, or no
            row survives cleaning.
    """
    frame = read_snapshot(path)
    data = clean_snapshot(frame, path=path, sha256=file_sha256(path))
    if data.report.rows_kept == 0:
        raise SnapshotError(f"snapshot {path}: no usable row left after cleaning")
    return data
