"""Reading a crystal structure (CIF, POSCAR, pymatgen JSON, XSF) into a compound to predict.

pymatgen reads the structure; its composition and density become the usual 119-vector, so a
structure is predicted exactly as its formula and density would be. Everything a client sends
is checked strictly before pymatgen reads it, for every key pymatgen would read: the text's
size, the number of structures it holds, its declared and listed sites, for a CIF the number
of site images its symmetry operations (centerings and magnetic operations included) would
generate and the transformations pymatgen would evaluate, for JSON the objects monty would
import. What pymatgen built is then checked for being a physical cell holding every element
the file names. The service runs all of it in worker processes (`app.core.structure_workers`),
where a file that gets past these checks can only hurt the worker.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from pymatgen.core.composition import Composition
from pymatgen.core.structure import Structure

from app.core.errors import InvalidDensityError, InvalidStructureError, StructureTooLargeError
from app.core.features import (
    DEFAULT_LIMITS,
    DensitySource,
    FormulaLimits,
    ParsedCompound,
    parse_composition,
    validate_density,
)


class StructureFormat(StrEnum):
    """The structure formats read, by the name pymatgen gives them."""

    CIF = "cif"
    POSCAR = "poscar"
    JSON = "json"
    XSF = "xsf"


FILE_SUFFIXES: dict[str, StructureFormat] = {
    ".cif": StructureFormat.CIF,
    ".mcif": StructureFormat.CIF,
    ".vasp": StructureFormat.POSCAR,
    ".poscar": StructureFormat.POSCAR,
    ".json": StructureFormat.JSON,
    ".xsf": StructureFormat.XSF,
}
"""File name endings, and the format each means; ``POSCAR``/``CONTCAR`` names are POSCAR."""
POSCAR_NAMES = ("POSCAR", "CONTCAR")


@dataclass(frozen=True, slots=True, kw_only=True)
class StructureLimits:
    """Bounds on a structure; the service takes them from its settings.

    pymatgen's time grows faster than the sites it builds (``python -m bench.structures`` on
    the development machine: a P1 CIF of 2,744 sites takes 2.3 s, 20 sites of a
    192-operation group, 3,840 sites, 2.1 s), so both what a structure has and what a CIF's
    symmetry would generate are bounded before pymatgen starts.

    Attributes:
        max_bytes: Longest structure text, in UTF-8 bytes.
        max_sites: Most sites in the cell (Materials Project structures have at most a few
            hundred).
        max_cif_images: Most site images a CIF's symmetry operations may generate before
            duplicates are merged (listed sites times operations).
    """

    max_bytes: int = 1 << 20
    max_sites: int = 2000
    max_cif_images: int = 5000


DEFAULT_STRUCTURE_LIMITS = StructureLimits()


@dataclass(frozen=True, slots=True)
class ParsedStructure:
    """A structure read into a compound.

    Attributes:
        compound: Its composition and its density (``density_source`` ``STRUCTURE``).
        format: The format it was read as.
        n_sites: Sites in its cell.
        is_ordered: False when some site is partially occupied (a disordered structure,
            predicted for its average composition).
        warnings: What reading it found worth saying.
    """

    compound: ParsedCompound
    format: StructureFormat
    n_sites: int
    is_ordered: bool
    warnings: tuple[str, ...]


_PYMATGEN_FORMATS: dict[StructureFormat, Literal["poscar", "json", "xsf"]] = {
    StructureFormat.POSCAR: "poscar",
    StructureFormat.JSON: "json",
    StructureFormat.XSF: "xsf",
}
_CIF_BLOCK = re.compile(r"^[ \t]*data_(\S*)", re.MULTILINE | re.IGNORECASE)
# Linear time: `^\s*PRIMVEC` would let `\s` run over every following newline from every line.
_XSF_PRIMVEC = re.compile(r"^[ \t]*PRIMVEC", re.MULTILINE)
_CIF_SITE_KEYS = ("_atom_site_fract_x", "_atom_site_cartn_x")
# A CIF naming only its (magnetic) space group gets its operations from pymatgen's tables:
# 192 at most, twice that for a magnetic group's time-reversed copies.
_MOST_OPERATIONS = 384
# pymatgen evaluates a magnetic CIF's setting transformation ('a,b,c;0,0,0') with sympy's
# parse_expr, which runs Python: only letters, digits, fractions and signs may reach it.
_TRANSFORMATION = re.compile(r"[abcxyz0-9+\-*/.,; ]{1,80}")
_ELEMENT_PREFIX = re.compile(r"[A-Z][a-z]?")
_TYPE_SYMBOL = re.compile(r"[A-Z][a-z]?[0-9]*(?:[0-9]*[+-][0-9]*)?")
_MAX_COUNT_DIGITS = 9
# Reasonable bounds of a crystal's cell: no lattice vector longer than this, in Å, and no
# density below this, in g/cm³ (solid hydrogen, the lightest crystal, is 0.086).
_MAX_CELL_LENGTH = 10_000.0
_MIN_DENSITY = 0.01
# Structure JSON: the only objects monty may build from it (pymatgen's own), by module.
_JSON_CLASSES = {
    "pymatgen.core.structure": {"Structure", "IStructure"},
    "pymatgen.core.lattice": {"Lattice"},
    "pymatgen.core.sites": {"PeriodicSite", "Site"},
    "pymatgen.core.periodic_table": {"Element", "Species", "DummySpecies"},
    "pymatgen.core.composition": {"Composition"},
}
_MAX_WARNING_CHARACTERS = 300
_CIF_ISSUES = "Issues encountered while parsing CIF"
# What pymatgen says of a sound CIF: nothing a user needs to act on.
_HARMLESS = ("No _symmetry_equiv_pos_as_xyz type key found",)


def detect_format(text: str) -> StructureFormat:
    """Guess a structure text's format from its content.

    Args:
        text: The structure file's text.

    Returns:
        JSON for an object, CIF for a text with a ``data_`` block, XSF for one with
        ``PRIMVEC``, else POSCAR (whose first line is free text).
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return StructureFormat.JSON
    if _CIF_BLOCK.search(text) and "_atom_site" in text.lower():
        return StructureFormat.CIF
    if _XSF_PRIMVEC.search(text):
        return StructureFormat.XSF
    return StructureFormat.POSCAR


def format_of_filename(name: str) -> StructureFormat | None:
    """The format a file's name says it holds (``Fe2O3.cif``, ``POSCAR``), or None."""
    base = name.rsplit("/", 1)[-1]
    if base.upper().startswith(POSCAR_NAMES):
        return StructureFormat.POSCAR
    dot = base.rfind(".")
    return None if dot < 0 else FILE_SUFFIXES.get(base[dot:].lower())


def _normalised(key: str) -> str:
    """A CIF key as pymatgen matches it: dots and underscores alike, no trailing underscore."""
    return key.lower().replace(".", "_").rstrip("_")


def _count(value: object) -> int:
    return len(value) if isinstance(value, list) else 1


def _cif_operations(block: dict[str, object]) -> int:
    """Most symmetry operations pymatgen could apply to a CIF block's sites.

    Counted for every key pymatgen reads them from, in each spelling it accepts
    (``_symmetry_equiv_pos_as_xyz_``, ``_space_group_symop.operation_xyz``, ...), magnetic
    operations times magnetic centerings included; the largest count is the bound.
    """
    operations = centerings = 0
    for key, value in block.items():
        name = _normalised(key)
        if not name.endswith("xyz"):
            continue
        if "centering" in name:
            centerings = max(centerings, _count(value))
        elif "symop" in name or "equiv_pos" in name:
            operations = max(operations, _count(value))
    if operations == 0:
        return _MOST_OPERATIONS
    return operations * max(centerings, 1)


def _check_cif_values(block: dict[str, object]) -> None:
    """Refuse values pymatgen would evaluate as code, or read as sites that are not there."""
    for key, value in block.items():
        name = _normalised(key)
        if "transform" in name:
            for text in value if isinstance(value, list) else [value]:
                # `**` (and `^`, never let through) would be a power sympy computes exactly.
                if (
                    not isinstance(text, str)
                    or not _TRANSFORMATION.fullmatch(text.strip("'\" "))
                    or "**" in text
                ):
                    raise InvalidStructureError(
                        f"the CIF's {key} {str(text)[:40]!r} is not a setting transformation "
                        "such as 'a,b,c;0,0,0' (letters a, b, c, digits, fractions and signs)"
                    )
        elif name.startswith(("_cell_length_", "_cell_angle_")):
            _check_cell_parameter(key, name, value)
        elif name == "_atom_site_type_symbol":
            for text in value if isinstance(value, list) else [value]:
                if not isinstance(text, str) or not _TYPE_SYMBOL.fullmatch(text):
                    raise InvalidStructureError(
                        f"the CIF's site type symbol {str(text)[:40]!r} is not an element "
                        "symbol (with an optional charge, such as Fe3+)"
                    )
        elif name == "_atom_site_occupancy":
            for text in value if isinstance(value, list) else [value]:
                occupancy = _cif_number(text)
                if occupancy is not None and not 0 < occupancy <= 1:
                    raise InvalidStructureError(
                        f"the CIF gives a site the occupancy {text!r}: occupancies must be "
                        "greater than 0 and at most 1"
                    )


def _check_cell_parameter(key: str, name: str, value: object) -> None:
    """Refuse a cell length that is not a positive length, or an angle outside (0°, 180°)."""
    number = None if isinstance(value, list) else _cif_number(value)
    if number is None:
        return  # pymatgen names a missing parameter itself
    if name.startswith("_cell_length_"):
        fits, what = 0 < number <= _MAX_CELL_LENGTH, f"above 0 and at most {_MAX_CELL_LENGTH:g} Å"
    else:
        fits, what = 0 < number < 180, "between 0° and 180°"
    if not (math.isfinite(number) and fits):
        raise InvalidStructureError(f"the CIF's {key} is {value!r}: it must lie {what}")


def _cif_number(text: object) -> float | None:
    """A CIF number without its standard uncertainty (``0.5(1)``); None for ``?`` and ``.``."""
    if not isinstance(text, str) or text in {"?", "."}:
        return None
    try:
        return float(text.split("(", 1)[0])
    except ValueError:
        raise InvalidStructureError(f"the CIF has {text[:40]!r} where a number belongs") from None


def _cif_named_elements(block: dict[str, object]) -> set[str]:
    """The elements a CIF block's sites name (their type symbols, else their labels)."""
    for key in ("_atom_site_type_symbol", "_atom_site_label"):
        if key in block:
            values = block[key]
            names = values if isinstance(values, list) else [values]
            return {
                match.group()
                for name in names
                if isinstance(name, str)
                and (match := _ELEMENT_PREFIX.match(name))
                and _is_element(match.group())
            }
    return set()


def _is_element(symbol: str) -> bool:
    from pymatgen.core.periodic_table import Element

    return Element.is_valid_symbol(symbol)


def _check_cif(text: str, limits: StructureLimits) -> set[str]:
    """Refuse a CIF that holds several structures or would expand to too many site images.

    Returns:
        The elements its sites name, to be found again in what pymatgen reads.
    """
    from pymatgen.io.cif import CifFile

    try:
        cif = CifFile.from_str(text)
    except Exception as exc:  # pymatgen raises ValueError, KeyError, IndexError, ...
        raise InvalidStructureError(f"not a readable CIF: {exc or type(exc).__name__}") from exc
    blocks = [
        (name, block)
        for name, block in cif.data.items()
        if any(_normalised(key) in _CIF_SITE_KEYS for key in block.data)
    ]
    if not blocks:
        raise InvalidStructureError("the CIF has no atom sites (_atom_site_fract_x)")
    if len(blocks) > 1:
        names = ", ".join(f"data_{name}" for name, _ in blocks[:5])
        raise InvalidStructureError(
            f"the CIF holds {len(blocks)} structures ({names}{', ...' if len(blocks) > 5 else ''})"
            "; send one per request, or each as an item of POST /predict/structure/batch"
        )
    block = blocks[0][1].data
    sites = max(
        _count(value) for key, value in block.items() if _normalised(key).startswith("_atom_site")
    )
    if sites > limits.max_sites:
        raise _too_many_sites(sites, limits, "sites listed")
    operations = _cif_operations(block)
    if sites * operations > limits.max_cif_images:
        raise StructureTooLargeError(
            f"the CIF lists {sites} sites and {operations} symmetry operations: up to "
            f"{sites * operations} site images to generate, more than the "
            f"{limits.max_cif_images} allowed"
        )
    _check_cif_values(block)
    return _cif_named_elements(block)


def _too_many_sites(count: int, limits: StructureLimits, what: str) -> StructureTooLargeError:
    return StructureTooLargeError(
        f"the structure has {count} {what}; at most {limits.max_sites} sites allowed"
    )


def _declared_count(word: str, what: str) -> int:
    """A count a file declares, read strictly: ASCII digits only, of a bounded length."""
    if not (word.isascii() and word.isdigit() and len(word) <= _MAX_COUNT_DIGITS):
        raise InvalidStructureError(
            f"the {what} {word[:40]!r} is not a whole number written in at most "
            f"{_MAX_COUNT_DIGITS} digits (0-9)"
        )
    return int(word)


def _starts_numeric(line: str) -> bool:
    words = line.split()
    return bool(words) and not words[0][:1].isalpha()


def _check_poscar(text: str, limits: StructureLimits) -> set[str]:
    """Read a POSCAR's scale and atom counts as pymatgen will, strictly and bounded.

    pymatgen takes the sixth line as counts when it reads as integers, else as species names
    continued over lines until one starts with a number, and that many lines of counts. Its
    ``int`` accepts ``+5`` and ``1_000_000_000``, and it builds a list per declared atom, so
    the counts are read here first with digits only, and their total bounded.

    Returns:
        The elements the species lines name.
    """
    from pymatgen.util.io_utils import clean_lines

    head = re.split(r"\n\s*\n", text.strip("\n"), maxsplit=1)[0]
    lines = list(clean_lines(head.split("\n")[: 2 * limits.max_sites + 40], False))
    if len(lines) < 7:
        raise InvalidStructureError(
            "not a POSCAR: it needs a comment, a scale, three lattice vectors, the atom counts "
            "and the coordinates"
        )
    try:
        scale = float(lines[1].split()[0]) if lines[1].split() else math.nan
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale == 0:
        raise InvalidStructureError(
            f"the POSCAR's scale {lines[1][:40]!r} is not a finite number other than 0"
        )
    species: list[str] = []
    if _starts_numeric(lines[5]):
        count_lines = lines[5:6]
    else:
        rows = 1
        while 5 + rows < len(lines) and rows <= 10 and not _starts_numeric(lines[5 + rows]):
            rows += 1
        species = [word for line in lines[5 : 5 + rows] for word in line.split()]
        count_lines = lines[5 + rows : 5 + 2 * rows]
    total = sum(
        _declared_count(word, "POSCAR atom count") for line in count_lines for word in line.split()
    )
    if total > limits.max_sites:
        raise _too_many_sites(total, limits, "sites declared")
    if total == 0:
        raise InvalidStructureError("the POSCAR declares no atoms")
    named = {word.split("/")[0].split("_")[0] for word in species}
    return {symbol for symbol in named if _is_element(symbol)}


def _check_xsf(text: str, limits: StructureLimits) -> int | None:
    """Refuse an XSF with data grids or too many declared atoms; return the declared count."""
    declared: int | None = None
    lines = iter(text.splitlines())
    for line in lines:
        keyword = line.strip().upper()
        if "DATAGRID" in keyword:
            raise InvalidStructureError(
                "the XSF holds data grids: send the structure alone (its PRIMVEC and PRIMCOORD)"
            )
        if keyword.startswith("PRIMCOORD"):
            words = next(lines, "").split()
            count = _declared_count(words[0] if words else "", "XSF atom count")
            if count > limits.max_sites:
                raise _too_many_sites(count, limits, "sites declared")
            declared = count if declared is None else declared
    return declared


def _check_json(text: str, limits: StructureLimits) -> str:
    """Refuse Structure JSON that names objects other than pymatgen's own, or too many sites.

    monty's decoder imports whatever module an ``@module`` names and calls what
    ``@callable`` names, so only pymatgen's Structure, Lattice, Site, Species and Composition
    pass, and the sites' ``properties`` (which the composition and density do not need) are
    dropped before pymatgen sees them.

    Returns:
        The JSON to hand to pymatgen.
    """
    try:
        document = json.loads(text)
    except RecursionError:
        raise InvalidStructureError("the structure JSON is nested too deeply") from None
    except ValueError as exc:
        raise InvalidStructureError(f"not readable JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidStructureError("structure JSON must be an object (Structure.as_dict())")
    sites = document.get("sites")
    if not isinstance(sites, list):
        raise InvalidStructureError("the structure JSON has no list of 'sites'")
    if len(sites) > limits.max_sites:
        raise _too_many_sites(len(sites), limits, "sites")
    document.pop("properties", None)
    for site in sites:
        if isinstance(site, dict):
            site.pop("properties", None)
    _check_json_objects(document)
    return json.dumps(document)


def _check_json_objects(value: object, depth: int = 0) -> None:
    if depth > 20:
        raise InvalidStructureError("the structure JSON is nested too deeply")
    if isinstance(value, list):
        for item in value:
            _check_json_objects(item, depth + 1)
        return
    if not isinstance(value, dict):
        return
    if "@callable" in value:
        raise InvalidStructureError("structure JSON may not name a callable ('@callable')")
    module = value.get("@module")
    named_class = value.get("@class")
    if (module is not None or "@class" in value) and named_class not in _JSON_CLASSES.get(
        str(module), set()
    ):
        raise InvalidStructureError(
            f"structure JSON may only hold pymatgen's Structure, Lattice, Site and Species "
            f"objects, not '@module' {str(module)[:60]!r} '@class' {str(named_class)[:60]!r}"
        )
    for item in value.values():
        _check_json_objects(item, depth + 1)


def _check_text_sites(text: str, limits: StructureLimits) -> None:
    """Refuse a POSCAR or XSF with more lines than its allowed sites could take."""
    # Each site takes a line; MD output (CONTCAR) may add one of velocities per site.
    lines = sum(1 for line in text.splitlines() if line.strip())
    if lines > 2 * limits.max_sites + 40:
        raise _too_many_sites(lines, limits, "lines")


def _unreadable(fmt: StructureFormat, detected: bool, reason: str) -> InvalidStructureError:
    reason = reason[:_MAX_WARNING_CHARACTERS]
    if detected and fmt is StructureFormat.POSCAR:
        return InvalidStructureError(
            "not a readable structure: it has no CIF data_ block with atom sites, is "
            "not a JSON object or an XSF file, and reading it as a POSCAR failed "
            f"({reason}); name its format if it has one"
        )
    return InvalidStructureError(f"not a readable {fmt.value.upper()} structure: {reason}")


def _read(text: str, fmt: StructureFormat, detected: bool) -> tuple[Structure, list[str]]:
    """Let pymatgen read the structure; its warnings are returned, not printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if fmt is StructureFormat.CIF:
                from pymatgen.io.cif import CifParser

                structures = CifParser.from_str(text).parse_structures(primitive=False)
                if not structures:
                    raise ValueError("no structure could be built from it")
                structure = structures[0]
            else:
                structure = Structure.from_str(text, fmt=_PYMATGEN_FORMATS[fmt])
        except InvalidStructureError:
            raise
        except Exception as exc:  # pymatgen raises many kinds; every one means "unreadable"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _unreadable(fmt, detected, reason) from exc
    said: list[str] = []
    for warning in caught:
        message = str(warning.message).strip().replace("\n", " ")
        # pymatgen repeats each CIF warning once more, prefixed with this.
        if message.startswith((_CIF_ISSUES, *_HARMLESS)):
            continue
        if message and message not in said:
            said.append(message[:_MAX_WARNING_CHARACTERS])
    return structure, said


def _check_cell(
    structure: Structure, named: set[str], declared: int | None, limits: StructureLimits
) -> None:
    """Refuse what pymatgen built when it is no physical cell, or lost sites the file names.

    Raises:
        InvalidStructureError: Lengths, angles, volume, coordinates or occupancies out of
            range, an element the file names missing from the structure, or fewer sites
            than an XSF declares.
        StructureTooLargeError: More sites than allowed.
    """
    if len(structure) == 0:
        raise InvalidStructureError("the structure has no sites")
    if len(structure) > limits.max_sites:
        raise _too_many_sites(len(structure), limits, "sites")
    lattice = structure.lattice
    lengths, angles = lattice.abc, lattice.angles
    if not all(math.isfinite(x) and 0 < x <= _MAX_CELL_LENGTH for x in lengths):
        raise InvalidStructureError(
            "the cell's lattice vectors must have finite lengths above 0 and at most "
            f"{_MAX_CELL_LENGTH:g} Å, got {', '.join(f'{x:.4g}' for x in lengths)}"
        )
    if not all(math.isfinite(x) and 0 < x < 180 for x in angles):
        raise InvalidStructureError(
            "the cell's angles must lie between 0° and 180°, got "
            f"{', '.join(f'{x:.4g}' for x in angles)}"
        )
    volume = lattice.volume
    if not math.isfinite(volume) or volume <= 1e-6 * math.prod(lengths):
        raise InvalidStructureError(
            "the cell has no volume: its lattice vectors are (nearly) in one plane"
        )
    if not np.isfinite(structure.frac_coords).all():
        raise InvalidStructureError("a site's coordinates are not finite numbers (NaN or inf)")
    for site in structure:
        amounts = site.species.values()
        if not all(0 < amount <= 1 for amount in amounts) or sum(amounts) > 1 + 1e-6:
            raise InvalidStructureError(
                f"a site holds {site.species.formula}: occupancies must be greater than 0 and "
                "add up to at most 1"
            )
    present = {element.symbol for element in structure.composition.elements}
    missing = sorted(named - present)
    if missing:
        raise InvalidStructureError(
            f"the file names {', '.join(missing)}, but no such site could be read (check its "
            "occupancy and species label): refusing to predict a different compound"
        )
    if declared is not None and declared != len(structure):
        raise InvalidStructureError(f"the XSF declares {declared} atoms but lists {len(structure)}")


_AMOUNT_OF_ONE = re.compile(r"(?<=[A-Za-z])1(?![\d.])")


def _composition_text(composition: Composition) -> str:
    """The cell's formula as people write it: ``Ni4O4``, ``NiO`` (not ``Ni1O1``)."""
    return _AMOUNT_OF_ONE.sub("", composition.formula.replace(" ", ""))


def parse_structure(
    text: str,
    fmt: StructureFormat | None = None,
    *,
    limits: StructureLimits = DEFAULT_STRUCTURE_LIMITS,
    formula_limits: FormulaLimits = DEFAULT_LIMITS,
) -> ParsedStructure:
    """Read a crystal structure and turn it into a compound to predict.

    Args:
        text: The structure file's text.
        fmt: Its format; detected from the text when None (see `detect_format`).
        limits: Bounds on the text and the structure.
        formula_limits: Bounds on its composition (distinct elements).

    Returns:
        The compound (reduced composition, density from the cell) and what reading found.

    Raises:
        InvalidStructureError: The text is empty, not a structure in that format, holds
            several structures, or gives an unphysical density or unknown elements.
        StructureTooLargeError: The text, or the structure it describes, is over a limit.
    """
    if not text.strip():
        raise InvalidStructureError("structure is empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise StructureTooLargeError(
            f"structure is {size} bytes long; at most {limits.max_bytes} allowed"
        )
    detected = fmt is None
    fmt = fmt or detect_format(text)
    named: set[str] = set()
    declared: int | None = None
    if fmt is StructureFormat.CIF:
        named = _check_cif(text, limits)
    else:
        try:
            if fmt is StructureFormat.JSON:
                text = _check_json(text, limits)
            else:
                if fmt is StructureFormat.POSCAR:
                    named = _check_poscar(text, limits)
                else:
                    declared = _check_xsf(text, limits)
                _check_text_sites(text, limits)
        except StructureTooLargeError:
            raise
        except InvalidStructureError as exc:
            raise _unreadable(fmt, detected, str(exc)) from None
    structure, said = _read(text, fmt, detected)
    _check_cell(structure, named, declared, limits)
    composition = structure.composition
    formula = _composition_text(composition)
    reduced_formula, amounts = parse_composition(composition, formula, formula_limits)
    try:
        density = validate_density(float(structure.density))
        if density < _MIN_DENSITY:
            raise InvalidDensityError(
                f"{density:.3g} g/cm³ is below {_MIN_DENSITY} g/cm³, lighter than any crystal"
            )
    except InvalidDensityError as exc:
        raise InvalidStructureError(
            f"the structure's cell gives no plausible density: {exc}"
        ) from exc
    found = [f"pymatgen: {message}" for message in said[:3]]
    if not structure.is_ordered:
        found.append(
            "disordered structure (partially occupied sites): predicted for its average "
            f"composition {reduced_formula}"
        )
    return ParsedStructure(
        compound=ParsedCompound(
            formula=formula,
            reduced_formula=reduced_formula,
            amounts=amounts,
            density=round(density, 4),
            density_source=DensitySource.STRUCTURE,
        ),
        format=fmt,
        n_sites=len(structure),
        is_ordered=structure.is_ordered,
        warnings=tuple(found),
    )
