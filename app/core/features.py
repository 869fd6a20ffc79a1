"""The feature contract shared by training and serving.

A compound is described to the model by a 119-long float32 vector:

* indices 0..117 hold the number of atoms of the element with atomic number Z at index Z-1 in
  the **reduced** formula, as Materials Project's ``formula_pretty`` writes it (``Fe4O6`` gives
  Fe 2, O 3);
* index 118 holds the density in g/cm³.

Formulas are parsed with pymatgen. This module is the only place that builds the vector; the
trainer and the service both call it, so the two cannot drift apart. ``FEATURE_LAYOUT_VERSION``
names the layout; it is written into every exported model's metadata and checked at load time.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache

import numpy as np
import numpy.typing as npt
from pymatgen.core.composition import Composition
from pymatgen.core.periodic_table import Element

from app.core.errors import InvalidDensityError, InvalidFormulaError

FEATURE_LAYOUT_VERSION = "z-counts-118+density-g/cm3:v1"
N_ELEMENTS = 118
N_FEATURES = N_ELEMENTS + 1
DENSITY_INDEX = N_ELEMENTS

MAX_ATOMS = 1000.0
"""Largest total number of atoms in the reduced formula."""
MIN_AMOUNT = 1e-3
"""Smallest amount of one element in the reduced formula (fractional formulas included)."""
MAX_DENSITY = 30.0
"""Highest density accepted, in g/cm³ (osmium, the densest element, is 22.6)."""

PARSE_CACHE_SIZE = 16_384
"""Distinct valid formulas whose parse is remembered.

Full, the cache holds about 11 MiB of four-element formulas, about 28 MiB of the longest
formulas allowed (100 characters, 12 elements), measured with tracemalloc.
"""

FeatureMatrix = npt.NDArray[np.float32]

# pymatgen warns whenever it orders a formula containing a noble gas; the order is all we use.
warnings.filterwarnings("ignore", message="No Pauling electronegativity", category=UserWarning)

_ISOTOPE_SYMBOLS = {"D": "H", "T": "H"}
# Adduct notation, as in CuSO4·5H2O: a dot (or its stand-ins) joins parts, each optionally
# led by a count. pymatgen reads none of these; "CuSO4.5H2O" it even misreads as O4.5.
_ADDUCT_SEPARATORS = re.compile(r"[·•∙*]")
_ADDUCT_PART = re.compile(r"\s*(\d+(?:\.\d+)?)?\s*(.*?)\s*$")
# With a full stop, only water of crystallization at the end counts as an adduct, and not
# after a lone 0 (Fe0.5H2O is Fe half, H2 O): everywhere else it is a decimal point.
_FULL_STOP_HYDRATE = re.compile(r"^(?P<main>.+?)\.(?P<count>\d+(?:\.\d+)?)?(?P<water>[HDT]2O)$")
_ENDS_IN_LONE_ZERO = re.compile(r"(?:^|[^\d.])0$")
_SYMBOL_TOKEN = re.compile(r"[A-Z][a-z]*")
# What may appear in a formula: symbols, amounts, groups (pymatgen reads [] and {} as ()),
# white space, adduct dots, and '@' of endohedral fullerenes (Y3N@C80), which pymatgen drops.
_NOT_FORMULA_CHARACTER = re.compile(r"[^A-Za-z0-9.()\[\]{}@\s·•∙*]")
_SCIENTIFIC_AMOUNT = re.compile(r"\d\.?\d*[eE][-+]?\d+")
_SUBSCRIPT_DIGITS = "₀₁₂₃₄₅₆₇₈₉"
_AMOUNT_TOKEN = re.compile(r"[\d.]+")
_VALID_AMOUNT = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_EMPTY_GROUP = re.compile(r"[(\[{]\s*[)\]}]")
_PYMATGEN_UNREAD = re.compile(r"^(?P<rest>.*) is an invalid formula!$", re.DOTALL)
# pymatgen's reduce_formula writes the last two elements as a polyanion, e.g. Ca(NO3)2, when
# their electronegativities differ by less than this.
_POLYANION_ELECTRONEGATIVITY_GAP = 1.65


@cache
def element_symbols() -> tuple[str, ...]:
    """Return the 118 element symbols in feature order (index Z-1)."""
    return tuple(Element.from_Z(z).symbol for z in range(1, N_ELEMENTS + 1))


@cache
def _symbol_to_index() -> dict[str, int]:
    index = {symbol: i for i, symbol in enumerate(element_symbols())}
    index.update({isotope: index[element] for isotope, element in _ISOTOPE_SYMBOLS.items()})
    return index


@dataclass(frozen=True, slots=True, kw_only=True)
class FormulaLimits:
    """Bounds on what a formula may be; the service takes them from its settings.

    Attributes:
        max_length: Most characters (the longest Materials Project formula has about 40).
        max_elements: Most distinct elements (Materials Project compounds have at most 9).
    """

    max_length: int = 100
    max_elements: int = 12


DEFAULT_LIMITS = FormulaLimits()


class DensitySource(StrEnum):
    """Where the density a prediction used came from."""

    GIVEN = "given"
    """Sent by the user."""
    STRUCTURE = "structure"
    """Computed by pymatgen from a crystal structure the user sent."""
    ESTIMATED = "estimated"
    """Estimated from the composition by the model's density estimator."""


@dataclass(frozen=True, slots=True)
class ParsedCompound:
    """A validated compound, ready to become a feature vector.

    Attributes:
        formula: The formula as the user wrote it (for a structure, its cell's formula).
        reduced_formula: pymatgen's reduced formula, e.g. ``Fe2O3`` for ``Fe4O6``.
        amounts: Element symbol to number of atoms in the reduced formula.
        density: Density in g/cm³; NaN until estimated when ``density_source`` is
            ``ESTIMATED`` (`app.core.predictor.Predictor.predict` fills it in).
        density_source: Where the density comes from.
    """

    formula: str
    reduced_formula: str
    amounts: dict[str, float]
    density: float
    density_source: DensitySource = DensitySource.GIVEN

    @property
    def is_fractional(self) -> bool:
        """Whether any amount in the reduced formula is not a whole number."""
        return any(not float(amount).is_integer() for amount in self.amounts.values())


def _formula_error(formula: str, reason: str) -> InvalidFormulaError:
    return InvalidFormulaError(f"invalid formula {formula!r}: {reason}")


def _check_notation(formula: str) -> None:
    """Refuse what pymatgen would misread or describe in its own terms, naming the problem."""
    scientific = _SCIENTIFIC_AMOUNT.search(formula)
    if scientific:
        raise _formula_error(
            formula,
            f"amount {scientific.group()!r} is in scientific notation; write amounts as plain "
            "numbers such as 2 or 0.5",
        )
    if "+" in formula or "-" in formula:
        raise _formula_error(
            formula, "charges and oxidation states are not supported; write e.g. 'Fe2O3'"
        )
    stray = _NOT_FORMULA_CHARACTER.search(formula)
    if stray:
        character = stray.group()
        hint = (
            "; write amounts as plain digits ('Fe2O3', not 'Fe₂O₃')"
            if character in _SUBSCRIPT_DIGITS
            else " (a formula holds element symbols, amounts and parentheses)"
        )
        raise _formula_error(
            formula, f"character {character!r} at position {stray.start()} is not allowed{hint}"
        )


def _check_amounts_and_groups(formula: str, expanded: str) -> None:
    """Refuse malformed amounts and parentheses in a formula whose adducts are expanded."""
    for token in _AMOUNT_TOKEN.findall(expanded):
        if not _VALID_AMOUNT.fullmatch(token):
            raise _formula_error(
                formula, f"{token!r} is not a number; write amounts such as 2 or 0.5"
            )
    depth = 0
    for character in expanded:
        depth += (character in "([{") - (character in ")]}")
        if depth < 0:
            break
    if depth != 0:
        raise _formula_error(formula, "unbalanced parentheses")
    if _EMPTY_GROUP.search(expanded):
        raise _formula_error(formula, "empty parentheses")


def _check_symbols(formula: str) -> set[str]:
    """Refuse unknown symbols; return the element symbols written."""
    written = set(_SYMBOL_TOKEN.findall(formula))
    if not written:
        raise _formula_error(
            formula, "no element symbol found (symbols are case-sensitive: 'Fe', not 'fe')"
        )
    known = _symbol_to_index()
    if not written <= known.keys():
        listed = ", ".join(repr(symbol) for symbol in sorted(written - known.keys()))
        raise _formula_error(formula, f"unknown element symbol(s) {listed}")
    if written.isdisjoint(_ISOTOPE_SYMBOLS):
        return written
    return {_ISOTOPE_SYMBOLS.get(symbol, symbol) for symbol in written}


def _expand_adducts(formula: str) -> str:
    """Rewrite adduct notation as groups pymatgen reads: ``CuSO4·5H2O`` to ``CuSO4(H2O)5``.

    Raises:
        InvalidFormulaError: A part of the adduct is empty.
    """
    if _ADDUCT_SEPARATORS.search(formula):
        main, *adducts = _ADDUCT_SEPARATORS.split(formula)
    else:
        hydrate = _FULL_STOP_HYDRATE.match(formula)
        if hydrate is None or _ENDS_IN_LONE_ZERO.search(hydrate["main"]):
            return formula
        main, adducts = hydrate["main"], [f"{hydrate['count'] or ''}{hydrate['water']}"]
    expanded = main.strip()
    for adduct in adducts:
        part = _ADDUCT_PART.match(adduct)
        assert part is not None  # noqa: S101 - the pattern matches any text
        count, body = part.groups()
        if not expanded or not body:
            raise _formula_error(
                formula, "empty part around '·'; write adducts as e.g. 'CuSO4·5H2O'"
            )
        expanded += f"({body}){count or ''}"
    return expanded


def _parse_composition(formula: str) -> Composition:
    expanded = _expand_adducts(formula)
    _check_amounts_and_groups(formula, expanded)
    try:
        # Not strict=True: _check_symbols has already refused dummy species such as 'X', and
        # pymatgen's own check of that costs a tenth of a parse.
        return Composition(expanded)
    except Exception as exc:  # pymatgen raises ValueError, OverflowError, KeyError, ...
        raise _formula_error(formula, _pymatgen_reason(str(exc) or type(exc).__name__)) from exc


def _pymatgen_reason(message: str) -> str:
    """Put what pymatgen says about a formula that passed `_check_notation` in user terms."""
    if message.startswith("could not convert string to float"):
        # Group amounts are multiplied out into text; past 1e16 Python writes them with an
        # exponent, which pymatgen's own reader then cannot read.
        return f"amounts multiply out to more than {MAX_ATOMS:g} atoms"
    unread = _PYMATGEN_UNREAD.match(message)
    if unread:
        return f"cannot read {unread['rest'].strip()!r} as element symbols and amounts"
    return message


@cache
def _formula_order() -> dict[str, tuple[float, str]]:
    """Each symbol's place in pymatgen's formula order: electronegativity, then symbol.

    Elements without an electronegativity (noble gases) come last, as in pymatgen.
    """
    keys: dict[str, tuple[float, str]] = {}
    for symbol in element_symbols():
        electronegativity = Element(symbol).X
        keys[symbol] = (math.inf if math.isnan(electronegativity) else electronegativity, symbol)
    return keys


def _count_text(count: int) -> str:
    """A whole-number amount as pymatgen's ``formula_double_format`` writes it: 1 is omitted."""
    return "" if count == 1 else str(count)


def _reduced_formula_and_factor(
    composition: Composition, amounts: dict[str, float]
) -> tuple[str, float]:
    """``composition.get_reduced_formula_and_factor()``, about five times as fast.

    The same steps as pymatgen's ``reduce_formula`` (electronegativity order, greatest common
    divisor, a polyanion written in parentheses, ``special_formulas``), with the order of the
    elements looked up instead of recomputed for every formula. A property test checks that
    both agree.
    """
    tolerance = Composition.amount_tolerance
    counts: dict[str, int] = {}
    for symbol, amount in amounts.items():
        count = round(amount)
        if abs(amount - count) >= tolerance:  # fractional: pymatgen does not reduce these
            return composition.formula.replace(" ", ""), 1.0
        counts[symbol] = count
    factor = math.gcd(*counts.values())
    order = _formula_order()
    symbols = sorted(counts, key=order.__getitem__)
    polyanion = ""
    if len(symbols) >= 3:
        second, last = symbols[-2], symbols[-1]
        # A noble gas's infinite key fails this test as pymatgen's NaN does: no polyanion.
        if order[last][0] - order[second][0] < _POLYANION_ELECTRONEGATIVITY_GAP:
            second_count, last_count = counts[second] // factor, counts[last] // factor
            polyanion_factor = math.gcd(second_count, last_count)
            if polyanion_factor != 1:
                polyanion = (
                    f"({second}{_count_text(second_count // polyanion_factor)}"
                    f"{last}{_count_text(last_count // polyanion_factor)}){polyanion_factor}"
                )
                symbols = symbols[:-2]
    formula = "".join(f"{symbol}{_count_text(counts[symbol] // factor)}" for symbol in symbols)
    formula += polyanion
    special = Composition.special_formulas.get(formula)
    if special is not None:  # O2, H2, Li2O2, ...: pymatgen does not reduce these fully
        return special, factor / 2
    return formula, factor


def _reduce(
    formula: str, written: set[str], composition: Composition, max_elements: int
) -> tuple[str, dict[str, float]]:
    amounts = composition.get_el_amt_dict()
    # pymatgen silently drops elements written with amount 0 ('Fe0O3'); refuse them instead.
    if len(amounts) < len(written):
        dropped = sorted(written - amounts.keys())
        raise _formula_error(
            formula,
            f"amount of {', '.join(dropped)} is 0 or rounds to 0 (the minimum is {MIN_AMOUNT:g})",
        )
    if len(amounts) > max_elements:
        raise _formula_error(
            formula, f"{len(amounts)} distinct elements; at most {max_elements} allowed"
        )
    for symbol, amount in amounts.items():
        if not math.isfinite(amount):
            raise _formula_error(formula, f"amount of {symbol} is not a finite number")
    reduced_formula, factor = _reduced_formula_and_factor(composition, amounts)
    reduced = {symbol: amount / factor for symbol, amount in amounts.items()}
    smallest = min(reduced, key=reduced.__getitem__)
    if reduced[smallest] < MIN_AMOUNT:
        raise _formula_error(
            formula,
            f"amount of {smallest} ({reduced[smallest]:g}) is below the minimum {MIN_AMOUNT:g}",
        )
    total = sum(reduced.values())
    if total > MAX_ATOMS:
        raise _formula_error(
            formula, f"reduced formula has {total:g} atoms; at most {MAX_ATOMS:g} allowed"
        )
    return reduced_formula, reduced


_STRAY_LOWER_CASE = re.compile(r"(?<![A-Za-z])[a-z]+")


def _check_lower_case(formula: str) -> None:
    """Refuse lower-case letters that follow no capital (``F e2O3``, ``Fe2o3``)."""
    stray = _STRAY_LOWER_CASE.search(formula)
    if stray:
        raise _formula_error(
            formula,
            f"{stray.group()!r} at position {stray.start()} follows no capital letter: element "
            "symbols start with one ('Fe', 'O'), and white space cannot split a symbol",
        )


_CAPITALS_PAIR = re.compile(r"(?=([A-Z])([A-Z]))")
_HEAVIEST_LIKELY_MEANT = 83
"""Past bismuth (Po, No, Nh, Cn: what NO3, PO4, NH3 and CN would spell) nobody means them."""


def case_warnings(formula: str) -> tuple[str, ...]:
    """Say where a formula written in capitals only could mean a two-letter symbol.

    ``NI`` is read as N and I, ``SC`` as S and C: valid, and rarely meant. A formula with any
    lower-case letter was written with care and gets no warning (CaCO3 is not Co).

    Args:
        formula: The formula as written.

    Returns:
        One warning per pair of capitals that also spells an element, e.g. Ni in ``NIO``.
    """
    if any(character.islower() for character in formula):
        return ()
    known = _symbol_to_index()
    found = []
    for first, second in _CAPITALS_PAIR.findall(formula):
        symbol = first + second.lower()
        if symbol in known and known[symbol] < _HEAVIEST_LIKELY_MEANT:
            found.append(
                f"{first}{second!s} in {formula!r} is read as {first} and {second}; if you "
                f"meant {symbol}, write {symbol!r} (symbols are case-sensitive)"
            )
    return tuple(dict.fromkeys(found))


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_stripped(formula: str, max_elements: int) -> tuple[str, tuple[tuple[str, float], ...]]:
    # Cached, so it returns immutable values; only successful parses are cached. Keyed on the
    # one limit it applies, an int, whose hash is cheaper than a FormulaLimits's.
    _check_notation(formula)
    written = _check_symbols(formula)
    _check_lower_case(formula)
    reduced_formula, amounts = _reduce(formula, written, _parse_composition(formula), max_elements)
    return reduced_formula, tuple(amounts.items())


def parse_formula(
    formula: str, limits: FormulaLimits = DEFAULT_LIMITS
) -> tuple[str, dict[str, float]]:
    """Validate a chemical formula and reduce it.

    The last ``PARSE_CACHE_SIZE`` distinct valid formulas are remembered, so repeated formulas
    skip pymatgen.

    Args:
        formula: A neutral chemical formula such as ``Fe2O3``, ``Ca(OH)2`` or
            ``Ba0.5Sr0.5TiO3``; surrounding and inner white space is ignored.
        limits: Bounds on length and number of elements.

    Returns:
        The reduced formula and the number of atoms of each element in it.

    Raises:
        InvalidFormulaError: The formula is empty, too long, unparsable, charged, names an
            unknown element, or has amounts outside the accepted limits.
    """
    if not isinstance(formula, str):
        raise InvalidFormulaError(f"formula must be a string, got {type(formula).__name__}")
    stripped = formula.strip()
    if not stripped:
        raise InvalidFormulaError("formula must not be empty")
    if len(stripped) > limits.max_length:
        raise InvalidFormulaError(
            f"formula is {len(stripped)} characters long; at most {limits.max_length} allowed"
        )
    reduced_formula, amounts = _parse_stripped(stripped, limits.max_elements)
    return reduced_formula, dict(amounts)


def parse_composition(
    composition: Composition, formula: str, limits: FormulaLimits = DEFAULT_LIMITS
) -> tuple[str, dict[str, float]]:
    """Validate and reduce a composition pymatgen built (from a structure), as formulas are.

    Args:
        composition: The composition; oxidation states, if any, are dropped.
        formula: How to name it in messages.
        limits: Bounds on the number of elements.

    Returns:
        The reduced formula and the number of atoms of each element in it.

    Raises:
        InvalidFormulaError: It holds something other than real elements (a vacancy or dummy
            species), or amounts outside the accepted limits.
    """
    amounts = composition.get_el_amt_dict()
    unknown = sorted(set(amounts) - _symbol_to_index().keys())
    if unknown:
        raise _formula_error(formula, f"unknown element symbol(s) {', '.join(unknown)}")
    plain = Composition(amounts)
    return _reduce(formula, set(amounts), plain, limits.max_elements)


def validate_density(density: float) -> float:
    """Check that a density is a plausible value in g/cm³.

    Args:
        density: The density in g/cm³.

    Returns:
        The density as a float.

    Raises:
        InvalidDensityError: The density is not a number, not finite, not positive, or above
            ``MAX_DENSITY``.
    """
    if isinstance(density, bool) or not isinstance(density, int | float):
        raise InvalidDensityError(f"density must be a number, got {type(density).__name__}")
    value = float(density)
    if not math.isfinite(value):
        raise InvalidDensityError(f"density must be a finite number, got {value}")
    # The values as written ({value}, not {value:g}), so that 30.000000000000004 is not
    # reported as 30 when it is refused for being over 30.
    if value <= 0:
        raise InvalidDensityError(f"density must be greater than 0 g/cm³, got {value}")
    if value > MAX_DENSITY:
        raise InvalidDensityError(
            f"density {value} g/cm³ is not physical: it is above the maximum of {MAX_DENSITY:g} "
            "g/cm³ (osmium, the densest element, is 22.6)"
        )
    return value


def parse_compound(
    formula: str, density: float | None, limits: FormulaLimits = DEFAULT_LIMITS
) -> ParsedCompound:
    """Validate a formula and a density together.

    Args:
        formula: A neutral chemical formula (see `parse_formula`).
        density: The density in g/cm³; None to have it estimated from the composition.
        limits: Bounds on the formula's length and number of elements.

    Returns:
        The validated compound.

    Raises:
        InvalidFormulaError: See `parse_formula`.
        InvalidDensityError: See `validate_density`.
    """
    reduced_formula, amounts = parse_formula(formula, limits)
    if density is None:
        return ParsedCompound(
            formula=formula,
            reduced_formula=reduced_formula,
            amounts=amounts,
            density=math.nan,
            density_source=DensitySource.ESTIMATED,
        )
    return ParsedCompound(
        formula=formula,
        reduced_formula=reduced_formula,
        amounts=amounts,
        density=validate_density(density),
    )


def vectorize(compounds: Iterable[ParsedCompound]) -> FeatureMatrix:
    """Build the feature matrix of already validated compounds.

    Args:
        compounds: Compounds from `parse_compound`.

    Returns:
        A float32 array of shape ``(n, N_FEATURES)``.
    """
    rows = list(compounds)
    matrix = np.zeros((len(rows), N_FEATURES), dtype=np.float32)
    flat = matrix.reshape(-1)  # a view: writes land in `matrix`
    index = _symbol_to_index()
    # Scalar writes into the flat view: for the usual few elements per row this is cheaper
    # than numpy's fancy indexing, which must first turn index lists into arrays.
    for row, compound in enumerate(rows):
        start = row * N_FEATURES
        for symbol, amount in compound.amounts.items():
            flat[start + index[symbol]] += amount
        flat[start + DENSITY_INDEX] = compound.density
    return matrix


def featurize(formula: str, density: float) -> FeatureMatrix:
    """Build the 119-long feature vector of one compound.

    Args:
        formula: A neutral chemical formula, e.g. ``Fe2O3``.
        density: The density in g/cm³.

    Returns:
        A float32 array of shape ``(N_FEATURES,)``.

    Raises:
        InvalidCompoundError: The formula or the density is invalid.

    Example:
        >>> v = featurize("Fe4O6", 5.24)
        >>> v[25], v[7]  # Fe (Z=26) and O (Z=8) of the reduced formula Fe2O3
        (np.float32(2.0), np.float32(3.0))
    """
    vector: FeatureMatrix = vectorize([parse_compound(formula, density)])[0]
    return vector


def featurize_many(rows: Iterable[tuple[str, float]]) -> FeatureMatrix:
    """Build the feature matrix of many ``(formula, density)`` rows.

    Args:
        rows: Pairs of formula and density in g/cm³.

    Returns:
        A float32 array of shape ``(n, N_FEATURES)``, one row per input row.

    Raises:
        InvalidCompoundError: A row is invalid; the message names its position.
    """
    compounds = []
    for position, (formula, density) in enumerate(rows):
        try:
            compounds.append(parse_compound(formula, density))
        except (InvalidFormulaError, InvalidDensityError) as exc:
            raise type(exc)(f"row {position}: {exc}") from exc
    return vectorize(compounds)
