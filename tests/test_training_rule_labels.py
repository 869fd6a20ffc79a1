"""Rule-assigned NM labels checked against MP's own labels, element by element."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.core.features import featurize
from model_training.mp.data import load_labelled_data
from model_training.mp.rule_labels import (
    can_carry_moment,
    contradicted_elements,
    contradicted_rule_labels,
    rule_precision_by_element,
)

COLUMNS = ["reduced_formula", "ordering", "label_source"]
MAGNETIC_SET = [
    ("MnO", "AFM", "mp_magmoms_rule"),  # MnO is in the magnetic set: its labels do not count
    ("VO2", "FM", "mp_magmoms_rule"),
]
# MP's own labels for formulas absent from the magnetic set.
REAL = [
    ("MnS2", "FM", "mp_label_2024"),
    ("KMnF3", "AFM", "mp_label_2024"),
    ("MnO", "NM", "mp_label_2024"),  # in the magnetic set: not evidence about the rule
    ("Dy(FeGe)6", "FiM", "mp_label_2024"),  # counts for Fe; Dy's f electrons are frozen in MP
    ("SrVO3", "NM", "mp_label_2021"),
    ("Li3VO4", "NM", "mp_label_2021"),
    ("VOF3", "FM", "mp_label_2021"),
]
RULE = [
    ("Mn2Sb", "NM", "rule_absent_from_magnetic_set"),
    ("DyN", "NM", "rule_absent_from_magnetic_set"),
    ("NaVO3", "NM", "rule_absent_from_magnetic_set"),
    ("KMnO4", "NM", "rule_no_d_f_element"),  # another rule: left alone
]


def _rows(*groups: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([row for group in groups for row in group], columns=COLUMNS)


def test_moments_are_counted_on_3d_metals_and_f_elements_mp_keeps_f_electrons_of() -> None:
    assert all(map(can_carry_moment, ["Mn", "Fe", "Ni", "V", "Eu", "Gd", "Ce", "U"]))
    assert not any(map(can_carry_moment, ["Dy", "Tb", "Nd", "Yb", "Pt", "Os", "O", "Na"]))


def test_rule_precision_counts_real_labels_of_formulas_absent_from_the_magnetic_set() -> None:
    precision = rule_precision_by_element(_rows(MAGNETIC_SET, REAL, RULE))
    assert precision == {"Fe": (1, 0), "Mn": (2, 0), "V": (3, 2)}


def test_elements_are_contradicted_below_the_precision_with_enough_labels() -> None:
    # Fe has one real label only: not enough to judge. V is NM in 2 of 3: under 0.75.
    assert contradicted_elements(_rows(MAGNETIC_SET, REAL, RULE)) == {"Mn": (2, 0), "V": (3, 2)}
    more_v = [("LiVO3", "NM", "mp_label_2021"), ("KVO3", "NM", "mp_label_2021")]
    assert set(contradicted_elements(_rows(MAGNETIC_SET, REAL, more_v, RULE))) == {"Mn"}


def test_only_rows_labelled_by_the_rule_with_a_contradicted_element_are_marked() -> None:
    rows = _rows(MAGNETIC_SET, REAL, RULE)
    marked = rows[contradicted_rule_labels(rows, set(contradicted_elements(rows)))]
    assert marked["reduced_formula"].tolist() == ["Mn2Sb", "NaVO3"]


def test_cleaning_counts_contradicted_rule_labels(tmp_path: Path) -> None:
    lines = ["record_id,material_id,formula_pretty,density,ordering,label_source,source"]
    groups = (MAGNETIC_SET, REAL, RULE)
    for number, (formula, ordering, source) in enumerate(row for group in groups for row in group):
        lines.append(f"r{number},,{formula},5.0,{ordering},{source},test")
    path = tmp_path / "snapshot.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = load_labelled_data(path)
    assert data.report.dropped == {"rule_label_contradicted": 2}
    assert data.report.contradicted_rule_elements == {"Mn": (2, 0), "V": (3, 2)}
    assert "Mn2Sb" not in set(data.rows["reduced_formula"])
    assert "DyN" in set(data.rows["reduced_formula"])
    assert len(data.features) == len(data.rows) == data.report.rows_kept
    for row, formula in zip(data.features, data.rows["formula_pretty"], strict=True):
        np.testing.assert_array_equal(row, featurize(formula, 5.0))
