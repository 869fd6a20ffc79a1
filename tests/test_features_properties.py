"""Property-based tests of the featurizer: whatever the input, an answer or a precise refusal."""

from __future__ import annotations

import math
from random import Random

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pymatgen.core.composition import Composition

from app.core.errors import InvalidDensityError, InvalidFormulaError
from app.core.features import (
    DENSITY_INDEX,
    MAX_DENSITY,
    element_symbols,
    featurize,
    parse_compound,
    parse_formula,
    validate_density,
    vectorize,
)

SYMBOLS = element_symbols()
DIATOMIC_OR_SPECIAL = {"H", "N", "O", "F", "Cl"}  # pymatgen writes these alone as H2, O2, ...

# Compositions of 2 to 4 distinct elements with small whole-number amounts.
compositions = st.dictionaries(
    st.sampled_from(SYMBOLS), st.integers(min_value=1, max_value=20), min_size=2, max_size=4
)


def _write(amounts: dict[str, int], order: list[str], factor: int = 1) -> str:
    return "".join(f"{symbol}{amounts[symbol] * factor}" for symbol in order)


def _parses_or_refuses(formula: str) -> None:
    try:
        reduced, amounts = parse_formula(formula)
    except InvalidFormulaError as exc:
        assert str(exc)
    else:
        assert reduced
        assert all(math.isfinite(a) and a > 0 for a in amounts.values())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_text_is_parsed_or_refused_with_a_domain_error(text: str) -> None:
    _parses_or_refuses(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="FeOCaHBaTi()[]{}.0123456789 e+-", max_size=60))
def test_formula_like_text_is_parsed_or_refused(text: str) -> None:
    _parses_or_refuses(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=60))
def test_deeply_nested_parentheses_are_parsed_or_refused(depth: int) -> None:
    formula = "(" * depth + "Fe2O3" + ")" * depth
    try:
        vector = featurize(formula, 5.0)
    except InvalidFormulaError:
        return
    np.testing.assert_array_equal(vector, featurize("Fe2O3", 5.0))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**400), st.sampled_from(["", ".5", "e3", "e999"]))
def test_huge_amounts_are_parsed_or_refused(amount: int, suffix: str) -> None:
    _parses_or_refuses(f"Fe{amount}{suffix}O")


@settings(max_examples=200, deadline=None)
@given(compositions, st.randoms(use_true_random=False), st.integers(min_value=2, max_value=5))
def test_element_order_and_formula_unit_do_not_change_the_vector(
    amounts: dict[str, int], rng: Random, factor: int
) -> None:
    order = sorted(amounts)
    shuffled = list(order)
    rng.shuffle(shuffled)
    reference = featurize(_write(amounts, order), 4.2)
    np.testing.assert_array_equal(featurize(_write(amounts, shuffled), 4.2), reference)
    np.testing.assert_array_equal(featurize(_write(amounts, order, factor), 4.2), reference)
    nonzero = {SYMBOLS[i] for i in np.flatnonzero(reference[:DENSITY_INDEX])}
    assert nonzero == set(amounts)
    assert reference[DENSITY_INDEX] == np.float32(4.2)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_every_element_lands_at_its_atomic_number(symbol: str) -> None:
    vector = featurize(symbol, 3.0)
    expected = 2.0 if symbol in DIATOMIC_OR_SPECIAL else 1.0
    assert vector[SYMBOLS.index(symbol)] == expected
    assert np.count_nonzero(vector[:DENSITY_INDEX]) == 1


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30)))
def test_any_number_is_a_valid_density_or_refused(density: float) -> None:
    try:
        value = validate_density(density)
    except InvalidDensityError as exc:
        assert str(exc)
    else:
        assert 0 < value <= MAX_DENSITY


# Formulas as people write them: 1 to 5 elements, whole or fractional amounts, any order.
written_formulas = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS),
        st.one_of(st.integers(min_value=1, max_value=40), st.sampled_from([0.5, 0.25, 1.5, 2.75])),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda pair: pair[0],
).map(lambda pairs: "".join(f"{symbol}{amount}" for symbol, amount in pairs))


@settings(max_examples=500, deadline=None)
@given(written_formulas)
# Polyanions, special formulas, isotopes, noble gases (no electronegativity), fractions.
@example("Ca(NO3)2")
@example("Ba(OH)2")
@example("K4Fe(CN)6")
@example("Li2Fe2P2O8")
@example("Li2O2")
@example("O4")
@example("D2O")
@example("Ar2Kr4Xe6")
@example("XeF4O2")
@example("Fe0.5O0.75")
def test_reduction_matches_pymatgen_reduced_composition(formula: str) -> None:
    # parse_formula reduces with its own copy of pymatgen's reduce_formula steps, not through
    # Composition.reduced_formula / reduced_composition; both must agree exactly.
    composition = Composition(formula)
    reduced_formula, amounts = parse_formula(formula)
    assert reduced_formula == composition.reduced_formula
    expected = {el.symbol: float(n) for el, n in composition.reduced_composition.items()}
    assert amounts == pytest.approx(expected, rel=1e-12)


def test_a_cached_parse_cannot_be_changed_by_its_caller() -> None:
    _, amounts = parse_formula("Fe2O3")
    amounts["Fe"] = 99.0
    assert parse_formula("Fe2O3") == ("Fe2O3", {"Fe": 2.0, "O": 3.0})


@settings(max_examples=100, deadline=None)
@given(st.lists(written_formulas, min_size=1, max_size=30))
def test_a_batch_vector_is_the_stack_of_single_vectors(formulas: list[str]) -> None:
    compounds = [parse_compound(formula, 1.0 + i) for i, formula in enumerate(formulas)]
    batch = vectorize(compounds)
    for row, compound in zip(batch, compounds, strict=True):
        np.testing.assert_array_equal(row, featurize(compound.formula, compound.density))
