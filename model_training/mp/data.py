"""Snapshots of Materials Project labels: their schema, loading, cleaning and features.

A snapshot is a CSV with one row per material, in the schema of the shared snapshot and of
what ``python -m model_training fetch`` writes. Loading validates the schema; cleaning drops
what a materials scientist would not train on and counts every dropped row by its reason;
features come from `app.core.features`, the exact code the service runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.errors import InvalidDensityError, InvalidFormulaError
from app.core.features import ParsedCompound, parse_compound, vectorize
from model_training.data import (
    CLASSES,
    LabelledData,
    RowFilter,
    load_clean,
    read_checked_csv,
)
from model_training.mp.rule_labels import contradicted_elements, contradicted_rule_labels

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

RULE_LABEL_PREFIX = "rule_"
"""``label_source`` values starting with this are labels assigned by a rule, not by MP."""

# When one material appears twice, keep the row whose label is MP's own stored label.
_EXACT_LABEL_PREFIX = "mp_label_"


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
    cleaning = RowFilter(frame.copy())
    drop = cleaning.drop
    if "deprecated" in cleaning.rows.columns:
        drop(_is_true(cleaning.rows["deprecated"]), "deprecated")
    drop(
        cleaning.rows[["formula_pretty", "ordering"]].isna().any(axis=1)
        | cleaning.rows["density"].isna(),
        "missing_value",
    )
    drop(~cleaning.rows["ordering"].isin([str(c) for c in CLASSES]), "unknown_ordering")
    compounds, reasons = _parse_rows(cleaning.rows)
    cleaning.dropped.update(reason for reason in reasons if reason is not None)
    parsed = [reason is None for reason in reasons]
    kept_compounds = [c for c in compounds if c is not None]
    cleaning.rows = cleaning.rows[parsed].assign(
        reduced_formula=[c.reduced_formula for c in kept_compounds],
        _compound=kept_compounds,  # dropped with its row from here on
    )
    priority = (~cleaning.rows["label_source"].str.startswith(_EXACT_LABEL_PREFIX)).astype(int)
    ranked = cleaning.rows.assign(_priority=priority).sort_values("_priority", kind="stable")
    duplicate = ranked["material_id"].notna() & ranked["material_id"].duplicated(keep="first")
    drop(duplicate.reindex(cleaning.rows.index), "duplicate_material")
    contradicted = contradicted_elements(cleaning.rows)
    drop(contradicted_rule_labels(cleaning.rows, set(contradicted)), "rule_label_contradicted")
    rows = cleaning.rows.reset_index(drop=True)
    kept_compounds = rows.pop("_compound").tolist()

    class_index = {str(c): i for i, c in enumerate(CLASSES)}
    labels = rows["ordering"].map(class_index).to_numpy(dtype=np.int64)
    report = cleaning.report(
        path=path,
        sha256=sha256,
        rows_read=len(frame),
        labels=labels,
        classes=CLASSES,
        label_sources=rows["label_source"],
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
    return load_clean(path, read=read_snapshot, clean=clean_snapshot, what="snapshot", unit="row")
