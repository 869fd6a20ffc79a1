"""Checking the snapshot's rule-assigned NM labels against Materials Project's own labels.

The shared snapshot labels NM, by rule, the structures with d or f elements whose formula has
no polymorph in its magnetic set (``rule_absent_from_magnetic_set``). Over all elements the
rule holds for about 95 % of the materials that also carry MP's own label; but not for every
element. Materials with real labels that are absent from the magnetic set and hold Mn are NM
in none of 5 cases, with Eu in none of 2 (the magnetic set has no Eu compound at all, so every
Eu compound in the snapshot was labelled NM by the rule, EuO included, while MP's Eu
potential keeps the 4f electrons that make Eu²⁺ magnetic). For such elements the rule's label
is more often wrong than right, and rows labelled by it are dropped.

A material is counted for the elements in it that can carry a moment in MP's calculations:
the 3d metals, and the f elements whose MP potential keeps the f electrons (Ce, Eu, Gd and the
actinides; MP freezes them in the core of Nd, Sm, Tb, Dy, …). So Dy(FeGe)6, magnetic, counts
against the rule for Fe, not for Dy.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache

import pandas as pd
from pymatgen.core.periodic_table import Element
from pymatgen.io.vasp.sets import MPRelaxSet

RULE_ABSENT_SOURCE = "rule_absent_from_magnetic_set"
"""The rule: a formula absent from the magnetic set is NM."""
MAGNETIC_SET_SOURCE = "mp_magmoms_rule"
"""The magnetic set the rule refers to."""
EXACT_LABEL_PREFIX = "mp_label_"
"""``label_source`` of MP's own stored labels."""
MIN_PRECISION = 0.75
"""Below this share of NM among real labels, the rule is not trusted for an element."""
MIN_REAL_LABELS = 2
"""Real labels needed before an element's share is believed at all."""

_SYMBOL = re.compile(r"[A-Z][a-z]?")


def _elements(formula: str) -> set[str]:
    return set(_SYMBOL.findall(formula))


@cache
def can_carry_moment(symbol: str) -> bool:
    """Whether an element can carry a magnetic moment in MP's calculations.

    Args:
        symbol: An element symbol.

    Returns:
        True for the 3d metals and for f elements whose MP potential (pymatgen's
        ``MPRelaxSet``) keeps the f electrons in the valence, i.e. is not a ``_2`` or ``_3``
        potential.
    """
    element = Element(symbol)
    if element.block == "d":
        return element.row == 4
    if element.block == "f":
        potential = str(MPRelaxSet.CONFIG["POTCAR"].get(symbol, "_3"))
        return not potential.endswith(("_2", "_3"))
    return False


def rule_precision_by_element(rows: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """How often the rule would be right, per element, where MP's own label is known.

    Args:
        rows: Snapshot rows with ``reduced_formula``, ``label_source`` and ``ordering``.

    Returns:
        For each element that can carry a moment (`can_carry_moment`): the number of
        materials with an exact MP label whose formula is absent from the magnetic set and
        holds the element, and how many of them are NM.
    """
    magnetic_set = set(rows.loc[rows["label_source"] == MAGNETIC_SET_SOURCE, "reduced_formula"])
    real = rows[rows["label_source"].str.startswith(EXACT_LABEL_PREFIX)]
    absent = real[~real["reduced_formula"].isin(magnetic_set)]
    seen: Counter[str] = Counter()
    non_magnetic: Counter[str] = Counter()
    for formula, ordering in zip(absent["reduced_formula"], absent["ordering"], strict=True):
        for element in filter(can_carry_moment, _elements(formula)):
            seen[element] += 1
            non_magnetic[element] += ordering == "NM"
    return {element: (seen[element], non_magnetic[element]) for element in sorted(seen)}


def contradicted_elements(rows: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Elements for which MP's own labels contradict the rule.

    Args:
        rows: As for `rule_precision_by_element`.

    Returns:
        Each element with at least `MIN_REAL_LABELS` real labels of which less than
        `MIN_PRECISION` are NM, with those two counts.
    """
    return {
        element: (seen, non_magnetic)
        for element, (seen, non_magnetic) in rule_precision_by_element(rows).items()
        if seen >= MIN_REAL_LABELS and non_magnetic < MIN_PRECISION * seen
    }


def contradicted_rule_labels(rows: pd.DataFrame, contradicted: set[str]) -> pd.Series:
    """Mark the rule-labelled rows that hold an element the rule does not hold for.

    Args:
        rows: As for `rule_precision_by_element`.
        contradicted: The elements, from `contradicted_elements`.

    Returns:
        A boolean mask aligned with ``rows``.
    """
    by_rule = rows["label_source"] == RULE_ABSENT_SOURCE
    holds_one = rows["reduced_formula"].map(lambda formula: bool(_elements(formula) & contradicted))
    return by_rule & holds_one.astype(bool)
