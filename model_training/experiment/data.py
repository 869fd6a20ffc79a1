"""Snapshots of reported magnetic transitions: their schema, cleaning, merging and features.

A snapshot is a CSV with one row per reported transition (``experimental_magnetic.csv``): the
composition as its source wrote it, ``FM`` with a Curie temperature or ``AFM`` with a Néel
temperature, and the source. Cleaning drops what a magnetism researcher would not train on,
counting every dropped report by its reason, and merges the reports of one composition
(reduced formula, as the service computes it) into one record. Features come from
`app.core.features`, the code the service runs; the sources give no density, so the vector's
density slot holds a placeholder that the experiment head never reads.
"""

from __future__ import annotations

import logging
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core.periodic_table import Element

from app.core.errors import InvalidFormulaError
from app.core.features import ParsedCompound, element_symbols, parse_compound, vectorize
from app.core.model_card import EXPERIMENT_CLASSES
from model_training.data import (
    LabelledData,
    RowFilter,
    load_clean,
    read_checked_csv,
)

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = (
    "record_id",
    "formula",
    "ordering",
    "temperature_kind",
    "temperature_K",
    "source",
)
"""Columns every experimental snapshot has; others (``doi``, ``reduced_formula``) may follow."""

KIND_OF_ORDERING = {"FM": "curie", "AFM": "neel"}
"""The transition each ordering is reported with: a Curie temperature for ferro- and
ferrimagnets, a Néel temperature for antiferromagnets."""

MAX_TEMPERATURE_K = 1500.0
"""Highest credible ordering temperature: cobalt's Curie temperature, the highest known, is
about 1,390 K. Reports above this are extraction errors."""

MAJORITY_SHARE = 2 / 3
"""A composition reported both FM and AFM keeps the ordering of at least this share of its
reports; below it the reports are dropped as conflicting."""

PLACEHOLDER_DENSITY = 1.0
"""Density written into the 119-vector of experimental rows, which have none; the experiment
head never reads it (its graph drops the density slot)."""


def _short_source(source: str) -> str:
    """The name of a source without its provenance note: 'NEMAD (Itani…)' is 'NEMAD'."""
    return source.split(" (", 1)[0].strip()


def read_experimental_snapshot(path: Path) -> pd.DataFrame:
    """Read an experimental snapshot CSV and check its schema.

    Args:
        path: The CSV file.

    Returns:
        The rows as read, every column as text except ``temperature_K`` (float, NaN when
        missing or not a number).

    Raises:
        SnapshotError: The file is missing or unreadable, a required column is missing, or
            ``record_id`` is not a unique key.
    """
    frame = read_checked_csv(path, REQUIRED_COLUMNS, what="experimental snapshot")
    frame["temperature_K"] = pd.to_numeric(frame["temperature_K"], errors="coerce")
    return frame


def _parse(formulas: pd.Series) -> list[ParsedCompound | None]:
    """Parse each formula with the service's own parser; None where the service refuses it."""
    compounds: list[ParsedCompound | None] = []
    for formula in formulas:
        try:
            compounds.append(parse_compound(str(formula), PLACEHOLDER_DENSITY))
        except InvalidFormulaError:
            compounds.append(None)
    return compounds


@cache
def _d_or_f_elements() -> frozenset[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about missing data of heavy elements
        return frozenset(s for s in element_symbols() if Element(s).block in ("d", "f"))


def _has_d_or_f(compound: ParsedCompound) -> bool:
    """Whether a compound holds an element of the d or f block, where moments live."""
    return not _d_or_f_elements().isdisjoint(compound.amounts)


def _decide_orderings(reports: pd.DataFrame) -> pd.Series:
    """The ordering each composition keeps: its reports' majority of at least `MAJORITY_SHARE`.

    Returns:
        Reduced formula to ``FM``, ``AFM``, or None where neither reaches the majority.
    """
    counts = reports.groupby(["reduced_formula", "ordering"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(KIND_OF_ORDERING), fill_value=0)
    share_fm = counts["FM"] / counts.sum(axis=1)
    decided = pd.Series(None, index=counts.index, dtype=object)
    decided[share_fm >= MAJORITY_SHARE] = "FM"
    decided[share_fm <= 1 - MAJORITY_SHARE] = "AFM"
    return decided


def _merge(reports: pd.DataFrame) -> pd.DataFrame:
    """One record per composition: median temperature, the number and spread of reports."""
    grouped = reports.sort_values("record_id").groupby("reduced_formula", sort=True)
    return grouped.agg(
        record_id=("record_id", "first"),
        formula=("formula", "first"),
        ordering=("ordering", "first"),
        temperature_K=("temperature_K", "median"),
        n_reports=("temperature_K", "size"),
        temperature_min_K=("temperature_K", "min"),
        temperature_max_K=("temperature_K", "max"),
        sources=("source", lambda s: "; ".join(sorted({_short_source(v) for v in s}))),
        _compound=("_compound", "first"),
    ).reset_index()


def clean_experimental_snapshot(frame: pd.DataFrame, *, path: Path, sha256: str) -> LabelledData:
    """Drop reports unfit for training, counting each by reason; merge each composition's.

    Reasons, checked in this order: ``missing_value`` (no formula, ordering or temperature),
    ``unknown_ordering`` (not FM or AFM), ``kind_mismatch`` (an FM row with a Néel
    temperature or an AFM row with a Curie one), ``unparsable_formula`` (refused by the
    service's own parser), ``non_positive_temperature`` (0 K or below: no transition),
    ``temperature_above_1500K`` (extraction errors; see `MAX_TEMPERATURE_K`),
    ``no_d_or_f_element`` (magnetic order reported for a composition with no d- or f-block
    element, as in Bi, Mg or BF: text-mining errors, the rule the MP snapshot labels NM by),
    ``conflicting_ordering`` (every report of a composition reported both FM and AFM without
    a two-thirds majority for either), ``minority_ordering_report`` (the reports outvoted by
    such a majority), and ``repeat_report_merged`` (the further reports of one composition,
    merged into its record: median temperature, report count and range kept).

    Args:
        frame: Rows from `read_experimental_snapshot`.
        path: Where they came from, for the report.
        sha256: The file's checksum, for the report.

    Returns:
        One record per composition: ``record_id`` (its first report's), ``formula``,
        ``reduced_formula``, ``ordering``, ``temperature_kind``, ``temperature_K``,
        ``n_reports``, ``temperature_min_K``, ``temperature_max_K`` and ``sources``; labels
        index `EXPERIMENT_CLASSES`.
    """
    cleaning = RowFilter(frame.copy())
    drop = cleaning.drop
    drop(
        cleaning.rows[["formula", "ordering"]].isna().any(axis=1)
        | cleaning.rows["temperature_K"].isna(),
        "missing_value",
    )
    drop(~cleaning.rows["ordering"].isin(list(KIND_OF_ORDERING)), "unknown_ordering")
    drop(
        cleaning.rows["temperature_kind"].str.strip().str.lower()
        != cleaning.rows["ordering"].map(KIND_OF_ORDERING),
        "kind_mismatch",
    )
    compounds = _parse(cleaning.rows["formula"])
    drop(pd.Series([c is None for c in compounds], index=cleaning.rows.index), "unparsable_formula")
    kept = [c for c in compounds if c is not None]
    cleaning.rows = cleaning.rows.assign(
        reduced_formula=[c.reduced_formula for c in kept], _compound=kept
    )
    drop(cleaning.rows["temperature_K"] <= 0, "non_positive_temperature")
    drop(cleaning.rows["temperature_K"] > MAX_TEMPERATURE_K, "temperature_above_1500K")
    drop(
        ~pd.Series([_has_d_or_f(c) for c in cleaning.rows["_compound"]], index=cleaning.rows.index),
        "no_d_or_f_element",
    )
    decided = cleaning.rows["reduced_formula"].map(_decide_orderings(cleaning.rows))
    drop(decided.isna(), "conflicting_ordering")
    drop(cleaning.rows["ordering"] != decided[cleaning.rows.index], "minority_ordering_report")
    reports_kept = cleaning.rows
    records = _merge(reports_kept)
    cleaning.dropped["repeat_report_merged"] += len(reports_kept) - len(records)
    compounds_kept = records.pop("_compound").tolist()
    records.insert(
        records.columns.get_loc("ordering") + 1,
        "temperature_kind",
        records["ordering"].map(KIND_OF_ORDERING),
    )
    class_index = {str(c): i for i, c in enumerate(EXPERIMENT_CLASSES)}
    labels = records["ordering"].map(class_index).to_numpy(dtype=np.int64)
    report = cleaning.report(
        path=path,
        sha256=sha256,
        rows_read=len(frame),
        labels=labels,
        classes=EXPERIMENT_CLASSES,
        label_sources=reports_kept["source"].map(_short_source),
        n_formulas=len(records),
    )
    logger.info(
        "experimental snapshot %s: %d reports read, %d compositions kept, dropped %s",
        path,
        report.rows_read,
        report.rows_kept,
        report.dropped or "none",
    )
    return LabelledData(
        rows=records, features=vectorize(compounds_kept), labels=labels, report=report
    )


def load_experimental_data(path: Path) -> LabelledData:
    """Read, validate, clean and merge an experimental snapshot, and build its features.

    Args:
        path: An experimental snapshot CSV.

    Returns:
        One record per composition with its features and FM/AFM label (`EXPERIMENT_CLASSES`
        order); ``rows["temperature_K"]`` holds its ordering temperature.

    Raises:
        SnapshotError: The file is missing, unreadable or not in the schema, or no record
            survives cleaning.
    """
    return load_clean(
        path,
        read=read_experimental_snapshot,
        clean=clean_experimental_snapshot,
        what="experimental snapshot",
        unit="record",
    )
