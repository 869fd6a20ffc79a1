"""Small synthetic snapshots of reported magnetic transitions, written by the tests themselves."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from model_training.experiment.data import REQUIRED_COLUMNS

# FM: iron-group metals with main-group partners, ordering hot; AFM: Mn/Cr fluorides, cold.
_CHEMISTRY = {
    "FM": (("Fe", "Co", "Ni"), ("Al", "Ga", "Si"), 700.0),
    "AFM": (("Mn", "Cr"), ("F", "Cl"), 60.0),
}

BAD_ROWS: list[tuple[dict[str, str], str]] = [
    # A report and the reason cleaning must give for dropping it.
    ({"formula": "Fe3Al", "ordering": "FM", "temperature_kind": "curie", "temperature_K": ""},
     "missing_value"),
    ({"formula": "Fe3Ga", "ordering": "PM", "temperature_kind": "curie", "temperature_K": "300"},
     "unknown_ordering"),
    ({"formula": "Co3Si", "ordering": "FM", "temperature_kind": "neel", "temperature_K": "300"},
     "kind_mismatch"),
    ({"formula": "Xx2Fe", "ordering": "FM", "temperature_kind": "curie", "temperature_K": "300"},
     "unparsable_formula"),
    ({"formula": "Ni3Al", "ordering": "FM", "temperature_kind": "curie", "temperature_K": "0"},
     "non_positive_temperature"),
    ({"formula": "NiGa", "ordering": "FM", "temperature_kind": "curie", "temperature_K": "67930"},
     "temperature_above_1500K"),
    ({"formula": "Mg2Si", "ordering": "FM", "temperature_kind": "curie", "temperature_K": "300"},
     "no_d_or_f_element"),
]  # fmt: skip
"""Reports a fixture snapshot carries that cleaning must drop, with the reason it counts."""

CONFLICTING_FORMULA = "MnBi2"
"""Reported once FM and once AFM: dropped whole as ``conflicting_ordering``."""
MAJORITY_FORMULA = "Fe2Mn"
"""Reported FM three times (400, 410 and 900 K) and AFM once: FM, median 410 K."""


def synthetic_reports(formulas_per_class: int, *, seed: int = 0) -> list[dict[str, str]]:
    """Return reports of two cleanly separable chemistries, some compositions reported twice.

    Args:
        formulas_per_class: Distinct compositions per ordering.
        seed: Seed of the generator.

    Returns:
        Rows with every `REQUIRED_COLUMNS` key, ``record_id`` ``x000000`` onwards.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    for ordering, (magnetic, partners, typical_k) in _CHEMISTRY.items():
        seen: set[str] = set()
        while len(seen) < formulas_per_class:
            m, p = str(rng.choice(magnetic)), str(rng.choice(partners))
            formula = f"{m}{rng.integers(1, 9)}{p}{rng.integers(1, 9)}"
            if formula in seen:
                continue
            seen.add(formula)
            kelvin = typical_k * float(rng.uniform(0.7, 1.3))
            for _ in range(1 + int(rng.random() < 0.2)):  # a fifth are reported twice
                rows.append(
                    {
                        "formula": formula,
                        "ordering": ordering,
                        "temperature_kind": "curie" if ordering == "FM" else "neel",
                        "temperature_K": f"{kelvin * float(rng.uniform(0.95, 1.05)):.1f}",
                    }
                )
    return rows


def write_experimental_snapshot(
    path: Path, formulas_per_class: int = 60, *, seed: int = 0, bad_rows: bool = False
) -> Path:
    """Write a synthetic experimental snapshot CSV.

    Args:
        path: Where to write it.
        formulas_per_class: Distinct compositions per ordering.
        seed: Seed of the generator.
        bad_rows: Also write every row of `BAD_ROWS`, a conflicting and an outvoted report.

    Returns:
        ``path``.
    """
    rows = synthetic_reports(formulas_per_class, seed=seed)
    if bad_rows:
        rows += [bad for bad, _ in BAD_ROWS]
        rows += [
            {"formula": CONFLICTING_FORMULA, "ordering": "FM", "temperature_kind": "curie",
             "temperature_K": "470"},
            {"formula": CONFLICTING_FORMULA, "ordering": "AFM", "temperature_kind": "neel",
             "temperature_K": "200"},
            *({"formula": MAJORITY_FORMULA, "ordering": "FM", "temperature_kind": "curie",
               "temperature_K": kelvin} for kelvin in ("400", "410", "900")),
            {"formula": MAJORITY_FORMULA, "ordering": "AFM", "temperature_kind": "neel",
             "temperature_K": "50"},
        ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=[*REQUIRED_COLUMNS, "doi"], restval="")
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow(
                {"record_id": f"x{i:06d}", "source": "tests/experiment_fixture.py", **row}
            )
    return path
