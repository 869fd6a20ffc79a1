"""Reading a crystal structure (CIF, POSCAR, pymatgen JSON, XSF) into a compound to predict.

pymatgen reads the structure; its composition and density become the usual 119-vector, so a
structure is predicted exactly as its formula and density would be. Bounds are checked before
pymatgen does the expensive part: the text's size, the number of structures it holds, and for
a CIF the number of site images its symmetry operations would generate, so that no upload
can hold a worker for long.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

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
_CIF_SITE_KEYS = ("_atom_site_fract_x", "_atom_site_cartn_x")
_CIF_OPERATION_KEYS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz")
# A CIF naming only its space group gets its operations from pymatgen's tables: 192 at most.
_MOST_OPERATIONS = 192
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
    if re.search(r"^\s*PRIMVEC", text, re.MULTILINE):
        return StructureFormat.XSF
    return StructureFormat.POSCAR


def format_of_filename(name: str) -> StructureFormat | None:
    """The format a file's name says it holds (``Fe2O3.cif``, ``POSCAR``), or None."""
    base = name.rsplit("/", 1)[-1]
    if base.upper().startswith(POSCAR_NAMES):
        return StructureFormat.POSCAR
    dot = base.rfind(".")
    return None if dot < 0 else FILE_SUFFIXES.get(base[dot:].lower())


def _check_cif(text: str, limits: StructureLimits) -> None:
    """Refuse a CIF that holds several structures or would expand to too many site images."""
    from pymatgen.io.cif import CifFile

    try:
        cif = CifFile.from_str(text)
    except Exception as exc:  # pymatgen raises ValueError, KeyError, IndexError, ...
        raise InvalidStructureError(f"not a readable CIF: {exc or type(exc).__name__}") from exc
    blocks = [
        (name, block)
        for name, block in cif.data.items()
        if any(key in block.data for key in _CIF_SITE_KEYS)
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
    sites = next(len(block[key]) for key in _CIF_SITE_KEYS if key in block)
    operations = next(
        (len(block[key]) for key in _CIF_OPERATION_KEYS if key in block), _MOST_OPERATIONS
    )
    if sites * operations > limits.max_cif_images:
        raise StructureTooLargeError(
            f"the CIF lists {sites} sites and {operations} symmetry operations: up to "
            f"{sites * operations} site images to generate, more than the "
            f"{limits.max_cif_images} allowed"
        )


def _too_many_sites(count: int, limits: StructureLimits, what: str) -> StructureTooLargeError:
    return StructureTooLargeError(
        f"the structure has {count} {what}; at most {limits.max_sites} sites allowed"
    )


def _check_text_sites(text: str, fmt: StructureFormat, limits: StructureLimits) -> None:
    """Refuse a POSCAR, XSF or JSON text that declares or holds more sites than allowed."""
    if fmt is StructureFormat.JSON:
        try:
            sites = json.loads(text).get("sites")
        except (ValueError, AttributeError, RecursionError):
            return  # pymatgen names the problem
        if isinstance(sites, list) and len(sites) > limits.max_sites:
            raise _too_many_sites(len(sites), limits, "sites")
        return
    lines = [line for line in text.splitlines() if line.strip()]
    if fmt is StructureFormat.POSCAR:
        for line in lines[5:7]:  # the counts follow the lattice, after the species if named
            words = line.split()
            if words and all(word.isdigit() for word in words):
                total = sum(int(word) for word in words)
                if total > limits.max_sites:
                    raise _too_many_sites(total, limits, "sites declared")
                break
    # Each site takes a line; MD output (CONTCAR) may add one of velocities per site.
    if len(lines) > 2 * limits.max_sites + 20:
        raise _too_many_sites(len(lines), limits, "lines")


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
            reason = reason[:_MAX_WARNING_CHARACTERS]
            if detected and fmt is StructureFormat.POSCAR:
                raise InvalidStructureError(
                    "not a readable structure: it has no CIF data_ block with atom sites, is "
                    "not a JSON object or an XSF file, and reading it as a POSCAR failed "
                    f"({reason}); name its format if it has one"
                ) from exc
            raise InvalidStructureError(
                f"not a readable {fmt.value.upper()} structure: {reason}"
            ) from exc
    said: list[str] = []
    for warning in caught:
        message = str(warning.message).strip().replace("\n", " ")
        # pymatgen repeats each CIF warning once more, prefixed with this.
        if message.startswith((_CIF_ISSUES, *_HARMLESS)):
            continue
        if message and message not in said:
            said.append(message[:_MAX_WARNING_CHARACTERS])
    return structure, said


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
    if fmt is StructureFormat.CIF:
        _check_cif(text, limits)
    else:
        _check_text_sites(text, fmt, limits)
    structure, said = _read(text, fmt, detected)
    if len(structure) == 0:
        raise InvalidStructureError("the structure has no sites")
    if len(structure) > limits.max_sites:
        raise StructureTooLargeError(
            f"the structure has {len(structure)} sites; at most {limits.max_sites} allowed"
        )
    composition = structure.composition
    formula = _composition_text(composition)
    reduced_formula, amounts = parse_composition(composition, formula, formula_limits)
    try:
        density = validate_density(float(structure.density))
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
