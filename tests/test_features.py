"""The feature contract: layout, invariances and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.core.errors import InvalidDensityError, InvalidFormulaError
from app.core.features import (
    DEFAULT_LIMITS,
    DENSITY_INDEX,
    N_FEATURES,
    FormulaLimits,
    case_warnings,
    element_symbols,
    featurize,
    featurize_many,
    parse_compound,
    parse_formula,
)

IRON, OXYGEN, HYDROGEN, CALCIUM = 25, 7, 0, 19  # index Z-1


def test_layout_is_118_elements_by_atomic_number_then_density() -> None:
    symbols = element_symbols()
    assert len(symbols) == 118
    assert (symbols[0], symbols[IRON], symbols[OXYGEN], symbols[-1]) == ("H", "Fe", "O", "Og")
    vector = featurize("Fe2O3", 5.24)
    assert vector.shape == (N_FEATURES,) == (119,)
    assert vector.dtype == np.float32
    assert vector[IRON] == 2
    assert vector[OXYGEN] == 3
    assert vector[DENSITY_INDEX] == np.float32(5.24)
    assert np.count_nonzero(vector) == 3


@pytest.mark.parametrize(
    "spelling", ["Fe2O3", "O3Fe2", "Fe4O6", "Fe2 O3", " O3Fe2 ", "Fe6O9", "(Fe2O3)2"]
)
def test_equivalent_spellings_give_identical_vectors(spelling: str) -> None:
    np.testing.assert_array_equal(featurize(spelling, 5.24), featurize("Fe2O3", 5.24))


def test_counts_are_those_of_the_reduced_formula() -> None:
    assert parse_formula("Fe4O6") == ("Fe2O3", {"Fe": 2.0, "O": 3.0})


def test_groups_are_expanded() -> None:
    vector = featurize("Ca(OH)2", 2.21)
    assert (vector[CALCIUM], vector[OXYGEN], vector[HYDROGEN]) == (1, 2, 2)


def test_fractional_formulas_keep_their_amounts() -> None:
    compound = parse_compound("Ba0.5Sr0.5TiO3", 5.5)
    assert compound.amounts == {"Ba": 0.5, "Sr": 0.5, "Ti": 1.0, "O": 3.0}
    assert compound.is_fractional
    assert not parse_compound("BaTiO3", 6.0).is_fractional


@pytest.mark.parametrize(
    "hydrate", ["CuSO4·5H2O", "CuSO4*5H2O", "CuSO4.5H2O", "CuSO4 • 5 H2O", "CuSO4∙5H2O"]
)
def test_hydrate_notations_give_the_hydrate_never_another_compound(hydrate: str) -> None:
    # pymatgen reads "CuSO4.5H2O" as Cu S O5.5 H2: a different compound, silently.
    assert parse_formula(hydrate) == ("CuH10SO9", {"Cu": 1, "S": 1, "O": 9, "H": 10})
    np.testing.assert_array_equal(featurize(hydrate, 2.29), featurize("CuH10SO9", 2.29))


@pytest.mark.parametrize(
    ("formula", "amounts"),
    [
        ("YBa2Cu3O6.5", {"Y": 1, "Ba": 2, "Cu": 3, "O": 6.5}),  # a decimal point, no water
        ("Fe0.5H2O", {"Fe": 0.5, "H": 2, "O": 1}),  # 0.5 is a decimal: no "Fe0" compound
        ("CaSO4·0.5H2O", {"Ca": 1, "S": 1, "O": 4.5, "H": 1}),  # hemihydrate
        ("Na2CO3·10H2O", {"Na": 2, "C": 1, "O": 13, "H": 20}),
        ("CuSO4.H2O", {"Cu": 1, "S": 1, "O": 5, "H": 2}),
    ],
)
def test_decimal_points_and_adduct_counts_are_told_apart(
    formula: str, amounts: dict[str, float]
) -> None:
    assert parse_formula(formula)[1] == pytest.approx(amounts)


@pytest.mark.parametrize("formula", ["CuSO4·", "·H2O", "CuSO4··5H2O", "CuSO4*"])
def test_an_empty_adduct_part_is_refused_with_how_to_write_it(formula: str) -> None:
    with pytest.raises(InvalidFormulaError, match=r"empty part .* e\.g\. 'CuSO4·5H2O'"):
        parse_formula(formula)


def test_isotopes_count_as_hydrogen() -> None:
    np.testing.assert_array_equal(featurize("D2O", 1.1), featurize("H2O", 1.1))


def test_batched_form_matches_single_form() -> None:
    rows = [("Fe2O3", 5.24), ("NaCl", 2.17), ("Ba0.5Sr0.5TiO3", 5.5)]
    matrix = featurize_many(rows)
    assert matrix.shape == (3, N_FEATURES)
    for row, (formula, density) in zip(matrix, rows, strict=True):
        np.testing.assert_array_equal(row, featurize(formula, density))


def test_batched_form_names_the_bad_row() -> None:
    with pytest.raises(InvalidFormulaError, match=r"^row 1: .*'Qq'"):
        featurize_many([("Fe2O3", 5.0), ("Qq", 1.0)])


def test_batched_form_of_nothing_is_empty() -> None:
    assert featurize_many([]).shape == (0, N_FEATURES)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("Xx2", "unknown element symbol(s) 'Xx'"),
        ("FeQqZz", "unknown element symbol(s) 'Qq', 'Zz'"),
        ("X", "unknown element symbol(s) 'X'"),
        ("Fe3+", "charges and oxidation states are not supported"),
        ("Fe2+O-", "charges and oxidation states are not supported"),
        ("Fe2O3!!", "character '!' at position 5 is not allowed"),
        ("Fe2&O3", "character '&' at position 3 is not allowed"),
        ("Fe₂O₃", "write amounts as plain digits ('Fe2O3', not 'Fe₂O₃')"),
        ("Fe1e-5O", "amount '1e-5' is in scientific notation"),
        ("Fe1e5O", "amount '1e5' is in scientific notation"),
        ("Fe.O", "'.' is not a number; write amounts such as 2 or 0.5"),
        ("Fe2O3.", "'3.' is not a number"),
        ("Fe0.5.5O", "'0.5.5' is not a number"),
        ("(" * 12 + "Fe" + "99)" * 12, "amounts multiply out to more than 1000 atoms"),
        ("((((Fe0.001)0.001)0.001)0.001)O", "amount of Fe is 0 or rounds to 0"),
        ("Fe(O", "unbalanced parentheses"),
        ("Fe)(O", "unbalanced parentheses"),
        ("Fe()O", "empty parentheses"),
        ("Fe2 3O", "cannot read '3' as element symbols and amounts"),
        ("fe2o3", "no element symbol found"),
        ("123", "no element symbol found"),
        ("Fe0O3", "amount of Fe is 0 or rounds to 0 (the minimum is 0.001)"),
        ("Fe(", "invalid formula 'Fe(': unbalanced parentheses"),
        ("Fe" * 51, f"102 characters long; at most {DEFAULT_LIMITS.max_length} allowed"),
        ("HHeLiBeBCNOFNeNaMgAl", "13 distinct elements; at most 12 allowed"),
        ("Li1000000000O", "1e+09 atoms; at most 1000 allowed"),
        ("He0.0000001", "below the minimum"),
        ("Fe0.0005O0.0002", "amount of O (0.0002) is below the minimum 0.001"),
    ],
)
def test_invalid_formulas_are_refused_with_a_precise_message(formula: str, message: str) -> None:
    with pytest.raises(InvalidFormulaError) as caught:
        parse_formula(formula)
    assert message in str(caught.value)
    assert caught.value.field == "formula"


def test_an_amount_too_large_for_a_float_is_refused() -> None:
    with pytest.raises(InvalidFormulaError, match="amount of H is not a finite number"):
        parse_formula("H" + "9" * 400, FormulaLimits(max_length=1000))


@pytest.mark.parametrize(
    ("density", "message"),
    [
        (0.0, "greater than 0"),
        (-1.0, "greater than 0"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (30.5, "density 30.5 g/cm³ is not physical: it is above the maximum of 30 g/cm³"),
        (30.000000000000004, "density 30.000000000000004 g/cm³ is not physical"),
        (-0.0, "greater than 0 g/cm³, got -0.0"),
        (True, "must be a number"),
        ("5.2", "must be a number"),
    ],
)
def test_invalid_densities_are_refused_with_a_precise_message(density: float, message: str) -> None:
    with pytest.raises(InvalidDensityError, match=message):
        parse_compound("Fe2O3", density)


def test_integer_density_is_accepted() -> None:
    assert featurize("Fe2O3", 5)[DENSITY_INDEX] == 5.0


@pytest.mark.parametrize(
    ("formula", "where"),
    [
        ("F e2O3", "'e' at position 2"),
        ("Fe2o3", "'o' at position 3"),
        ("Fe(oH)2", "'o' at position 3"),
    ],
)
def test_a_lower_case_letter_after_no_capital_is_named(formula: str, where: str) -> None:
    with pytest.raises(InvalidFormulaError, match=f"{where} follows no capital letter"):
        parse_formula(formula)


@pytest.mark.parametrize(
    ("formula", "meant"),
    [("NI", "Ni"), ("SC", "Sc"), ("NB", "Nb"), ("PB", "Pb"), ("NIO", "Ni"), ("CUO", "Cu")],
)
def test_capitals_that_spell_a_symbol_get_a_warning(formula: str, meant: str) -> None:
    (warning,) = case_warnings(formula)
    assert f"if you meant {meant}, write {meant!r}" in warning


@pytest.mark.parametrize("formula", ["KNO3", "BPO4", "NH3", "HCN", "CaCO3", "NaCl", "Fe2O3"])
def test_careful_or_common_formulas_get_no_case_warning(formula: str) -> None:
    assert case_warnings(formula) == ()
