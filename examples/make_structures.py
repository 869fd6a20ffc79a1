"""Write the example structure files in ``examples/relaxed/`` from published cell parameters.

Every file here is built with pymatgen from textbook crystallography, not taken from any
database: ``python examples/make_structures.py`` writes them again, byte for byte.

- ``NiO.cif``: rock salt (Fm-3m), a = 4.1771 Å (bunsenite at room temperature).
- ``Fe2O3.cif``: hematite, corundum type (R-3c), a = 5.0356 Å, c = 13.7489 Å, Fe at
  (0, 0, 0.3553), O at (0.3059, 0, 1/4), in its conventional hexagonal cell.
- ``FeCo.cif``: the disordered bcc Fe-Co alloy (Im-3m), a = 2.857 Å, both sites half Fe and
  half Co: a disordered structure, predicted for its average composition.
- ``POSCAR_NaCl``: rock salt NaCl (Fm-3m), a = 5.6402 Å, as a VASP POSCAR.
"""

from __future__ import annotations

from pathlib import Path

from pymatgen.core.lattice import Lattice
from pymatgen.core.structure import Structure

HERE = Path(__file__).resolve().parent / "relaxed"


def main() -> None:
    """Write the four files."""
    HERE.mkdir(exist_ok=True)
    rock_salt = [[0, 0, 0], [0.5, 0.5, 0.5]]
    nio = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.1771), ["Ni", "O"], rock_salt)
    hematite = Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(5.0356, 13.7489), ["Fe", "O"], [[0, 0, 0.3553], [0.3059, 0, 0.25]]
    )
    half = {"Fe": 0.5, "Co": 0.5}
    feco = Structure(Lattice.cubic(2.857), [half, half], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6402), ["Na", "Cl"], rock_salt)
    nio.to(filename=str(HERE / "NiO.cif"))
    hematite.to(filename=str(HERE / "Fe2O3.cif"))
    feco.to(filename=str(HERE / "FeCo.cif"))
    nacl.to(filename=str(HERE / "POSCAR_NaCl"), fmt="poscar")


if __name__ == "__main__":
    main()
