"""Small synthetic snapshots in the Materials Project schema, written by the tests themselves."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from model_training.mp.data import REQUIRED_COLUMNS

# Each class gets its own chemistry, so that a tiny network can learn it in a few epochs.
_CHEMISTRY = {
    "NM": (("Na", "K", "Mg", "Ca", "Al"), ("O", "S", "Cl", "F")),
    "FM": (("Fe", "Co", "Ni"), ("O", "S")),
    "FiM": (("Fe",), ("Mn", "Cr")),
    "AFM": (("Mn", "Cr", "V"), ("F", "Cl")),
}
_DENSITY = {"NM": 2.5, "FM": 6.0, "FiM": 5.0, "AFM": 4.0}

BAD_ROWS = [
    # (formula, density, ordering, extra columns) and the reason cleaning must give.
    (("Fe2O3", "5.2", "FM", {"deprecated": "True"}), "deprecated"),
    (("NiO", "6.7", "Unknown", {}), "unknown_ordering"),
    (("Xx2O3", "4.0", "NM", {}), "unparsable_formula"),
    (("CaO", "-1.0", "NM", {}), "non_physical_density"),
    (("CaO", "", "NM", {}), "missing_value"),
]
"""Rows a fixture snapshot may carry that cleaning must drop, with the reason it counts."""


def synthetic_rows(rows_per_class: int, *, seed: int = 0) -> list[dict[str, str]]:
    """Return snapshot rows of four cleanly separable chemistries, some with polymorphs.

    Args:
        rows_per_class: Distinct formulas per ordering.
        seed: Seed of the generator.

    Returns:
        Rows with every `REQUIRED_COLUMNS` key, ``record_id`` ``t000000`` onwards.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    for ordering, (cations, anions) in _CHEMISTRY.items():
        seen: set[str] = set()
        while len(seen) < rows_per_class:
            cation, anion = str(rng.choice(cations)), str(rng.choice(anions))
            formula = f"{cation}{rng.integers(1, 9)}{anion}{rng.integers(1, 9)}"
            if formula in seen:
                continue
            seen.add(formula)
            for _ in range(1 + int(rng.random() < 0.2)):  # a fifth have a polymorph
                rows.append(
                    {
                        "record_id": f"t{len(rows):06d}",
                        "material_id": f"mp-{900000 + len(rows)}",
                        "formula_pretty": formula,
                        "density": f"{_DENSITY[ordering] + rng.normal(0, 0.3):.4f}",
                        "ordering": ordering,
                        "label_source": "rule_no_d_f_element"
                        if ordering == "NM"
                        else "mp_magmoms_rule",
                        "source": "tests/snapshot_fixture.py",
                    }
                )
    return rows


def write_snapshot(
    path: Path, rows_per_class: int = 40, *, seed: int = 0, bad_rows: bool = False
) -> Path:
    """Write a synthetic snapshot CSV.

    Args:
        path: Where to write it.
        rows_per_class: Distinct formulas per ordering.
        seed: Seed of the generator.
        bad_rows: Also write every row of `BAD_ROWS` and one duplicated material id.

    Returns:
        ``path``.
    """
    rows = synthetic_rows(rows_per_class, seed=seed)
    columns = [*REQUIRED_COLUMNS, "deprecated"]
    if bad_rows:
        for i, ((formula, density, ordering, extra), _) in enumerate(BAD_ROWS):
            rows.append(
                {
                    "record_id": f"bad{i}",
                    "material_id": f"mp-bad{i}",
                    "formula_pretty": formula,
                    "density": density,
                    "ordering": ordering,
                    "label_source": "mp_label_2025",
                    "source": "tests",
                    **extra,
                }
            )
        duplicate = dict(rows[0], record_id="dup0", label_source="mp_label_2025")
        rows.append(duplicate)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path
