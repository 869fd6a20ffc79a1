"""Per-element property table, taken from pymatgen and baked into the network as a constant.

Each row describes the element at feature index Z-1. The network averages these properties
over a compound's elements (weighted by atomic fraction), so a compound of elements seen
rarely in training still gets a meaningful description from its chemistry.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from pymatgen.core.periodic_table import Element

from app.core.features import N_ELEMENTS, element_symbols

PROPERTY_NAMES: tuple[str, ...] = (
    "atomic_number",
    "electronegativity",
    "group",
    "row",
    "block_s",
    "block_p",
    "block_d",
    "block_f",
    "atomic_mass",
    "atomic_radius",
    "mendeleev_number",
    "ionization_energy",
    "valence_s",
    "valence_p",
    "valence_d",
    "valence_f",
    "unpaired_d",
    "unpaired_f",
    "is_transition_metal",
    "is_rare_earth",
    "is_metal",
)
"""Names of the table's columns, in order."""

_SHELL_CAPACITY = {"s": 2, "p": 6, "d": 10, "f": 14}
# Valence shells relative to the outermost principal quantum number n: ns, np, (n-1)d, (n-2)f.
_VALENCE_SHELL_OFFSET = {"s": 0, "p": 0, "d": 1, "f": 2}


def _optional_float(value: object) -> float:
    """A property pymatgen may lack (None, missing key) as a float, NaN when unknown."""
    if value is None:
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _valence_occupancy(element: Element) -> dict[str, float]:
    """Electrons in the ns, np, (n-1)d and (n-2)f shells; NaN when pymatgen has no data."""
    try:
        shells = element.full_electronic_structure
    except (KeyError, ValueError):  # the heaviest elements have no electronic structure
        return dict.fromkeys(_SHELL_CAPACITY, math.nan)
    outermost = max(n for n, _, _ in shells)
    occupancy = dict.fromkeys(_SHELL_CAPACITY, 0.0)
    for n, orbital, electrons in shells:
        if n == outermost - _VALENCE_SHELL_OFFSET[orbital]:
            occupancy[orbital] = float(electrons)
    return occupancy


def _element_row(element: Element) -> list[float]:
    valence = _valence_occupancy(element)

    def unpaired(orbital: str) -> float:
        # Hund's rule: electrons stay unpaired until the shell is half full.
        return min(valence[orbital], _SHELL_CAPACITY[orbital] - valence[orbital])

    radius = _optional_float(element.atomic_radius)
    if math.isnan(radius):
        radius = _optional_float(element.atomic_radius_calculated)
    return [
        float(element.Z),
        _optional_float(element.X),
        _optional_float(element.group),
        _optional_float(element.row),
        *(float(element.block == block) for block in "spdf"),
        _optional_float(element.atomic_mass),
        radius,
        _optional_float(element.mendeleev_no),
        _optional_float(element.ionization_energy),
        *(valence[orbital] for orbital in "spdf"),
        unpaired("d"),
        unpaired("f"),
        float(element.is_transition_metal),
        float(element.is_rare_earth),
        float(element.is_metal),
    ]


@cache
def element_property_table() -> npt.NDArray[np.float32]:
    """Return the ``(118, len(PROPERTY_NAMES))`` property table, rows in feature order.

    Properties pymatgen does not know (the radius or electronic structure of the heaviest
    elements, the electronegativity of noble gases) are filled with the mean over the
    elements that have them, so they neither dominate nor vanish from the averages.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about every missing property
        rows = [_element_row(Element(symbol)) for symbol in element_symbols()]
    table = np.asarray(rows, dtype=np.float64)
    column_means = np.nanmean(table, axis=0)
    missing = np.isnan(table)
    table[missing] = np.take(column_means, np.nonzero(missing)[1])
    assert table.shape == (N_ELEMENTS, len(PROPERTY_NAMES))  # noqa: S101 - a programming error
    return table.astype(np.float32)


def atomic_masses() -> npt.NDArray[np.float32]:
    """Return the atomic mass of each element in feature order, in g/mol."""
    return element_property_table()[:, PROPERTY_NAMES.index("atomic_mass")].copy()


# Typical charges for the charge-balance estimate of transition-metal oxidation states. Each
# element has two roles: one in compounds holding O or F (oxides, fluorides, and the oxo-anions
# of P, S, N, C, Si, B as in phosphates, sulfates, nitrates, carbonates, silicates, borates)
# and one otherwise (phosphides, sulfides, nitrides, carbides, silicides, borides, hydrides).
# Positive numbers are cation charges, negative ones anion charges.
_CHARGE_WITH_OXYGEN: dict[str, int] = {
    "O": -2, "F": -1, "Cl": -1, "Br": -1, "I": -1,
    "S": 6, "Se": 6, "Te": 6, "N": 5, "P": 5, "As": 5, "Sb": 5, "C": 4, "Si": 4, "Ge": 4,
    "Sn": 4, "B": 3, "H": 1,
}  # fmt: skip
_CHARGE_WITHOUT_OXYGEN: dict[str, int] = {
    "Cl": -1, "Br": -1, "I": -1, "S": -2, "Se": -2, "Te": -2, "N": -3, "P": -3, "As": -3,
    "Sb": -3, "C": -4, "Si": -4, "Ge": -4, "B": -3, "H": -1, "Sn": 2,
}  # fmt: skip
_FIXED_CATIONS: dict[str, int] = {
    "Al": 3, "Ga": 3, "In": 3, "Tl": 1, "Pb": 2, "Bi": 3, "Zn": 2, "Cd": 2, "Hg": 2,
    "Sc": 3, "Y": 3, "La": 3, "Lu": 3,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChargeTables:
    """Per-element constants of the oxidation-state estimate, in feature order.

    Attributes:
        charge_with_oxygen: Typical charge in a compound holding O or F; 0 for the
            transition metals and actinides whose charge is estimated instead.
        charge_without_oxygen: Typical charge otherwise.
        variable: 1 for the elements whose oxidation state is estimated (d-block groups 4 to
            11, actinides), else 0.
        valence_electrons: Electrons outside the noble-gas core of the variable elements:
            their d (or f + d) count is this minus the oxidation state.
    """

    charge_with_oxygen: npt.NDArray[np.float32]
    charge_without_oxygen: npt.NDArray[np.float32]
    variable: npt.NDArray[np.float32]
    valence_electrons: npt.NDArray[np.float32]


@cache
def charge_tables() -> ChargeTables:
    """Return the constants of the charge-balance estimate (see `ChargeTables`).

    Alkali and alkaline-earth metals take their group charge and the lanthanides +3, with or
    without oxygen; the elements listed above take their typical charge.
    """
    with_oxygen = np.zeros(N_ELEMENTS, np.float32)
    without_oxygen = np.zeros(N_ELEMENTS, np.float32)
    variable = np.zeros(N_ELEMENTS, np.float32)
    valence = np.zeros(N_ELEMENTS, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, symbol in enumerate(element_symbols()):
            element = Element(symbol)
            fixed: float | None = None
            if element.group in (1, 2) and symbol != "H":
                fixed = float(element.group)
            elif element.is_lanthanoid or symbol in _FIXED_CATIONS:
                fixed = float(_FIXED_CATIONS.get(symbol, 3))
            if fixed is not None:
                with_oxygen[index] = without_oxygen[index] = fixed
            elif 4 <= element.group <= 11 and element.block == "d":
                variable[index] = 1.0
                valence[index] = float(element.group)
            elif element.is_actinoid:
                variable[index] = 1.0
                valence[index] = float(element.Z - 86)  # outside the radon core
            with_oxygen[index] = _CHARGE_WITH_OXYGEN.get(symbol, with_oxygen[index])
            without_oxygen[index] = _CHARGE_WITHOUT_OXYGEN.get(symbol, without_oxygen[index])
    return ChargeTables(with_oxygen, without_oxygen, variable, valence)
