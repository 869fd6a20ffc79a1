"""Benchmark of reading crystal structures: how long pymatgen takes, and what the bounds allow.

Times `app.core.structures.parse_structure` (the bounds' checks, pymatgen's parse, the
composition and density) on rock-salt supercells written as CIF (P1) and POSCAR, and on CIFs
whose general positions a 192-operation space group (Fm-3m) expands, the case the
``max_cif_images`` bound exists for; then what isolation costs: the same small structures read
in this process and through `app.core.structure_workers.StructureWorkers` (the worker processes
the service, the CLI and the Python API read structures in), per structure and in memory per
worker. Prints a Markdown report. ``python -m bench.structures``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
from pymatgen.core.lattice import Lattice
from pymatgen.core.structure import Structure

from app.core.structure_workers import DEFAULT_ISOLATION, StructureWorkers
from app.core.structures import DEFAULT_STRUCTURE_LIMITS, StructureLimits, parse_structure
from bench.speed import describe_machine

_UNBOUNDED = StructureLimits(max_bytes=1 << 30, max_sites=10**7, max_cif_images=10**8)
_SITE_COLUMNS = (
    "loop_\n _atom_site_type_symbol\n _atom_site_label\n _atom_site_symmetry_multiplicity\n"
    " _atom_site_fract_x\n _atom_site_fract_y\n _atom_site_fract_z\n _atom_site_occupancy\n"
)


def _rock_salt(cells: int) -> Structure:
    unit = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.177), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return unit.make_supercell([cells, cells, cells], in_place=False)


def _fm3m_general_positions(listed: int, seed: int = 0) -> str:
    """A CIF of ``listed`` Fe sites in general positions of Fm-3m (192 images each)."""
    rng = np.random.default_rng(seed)
    symmetrized = _rock_salt(1).to(fmt="cif", symprec=0.1)
    head = symmetrized[: symmetrized.index("loop_\n _atom_site")].replace("4.17700000", "60")
    rows = "".join(
        f"  Fe  Fe{i}  192  {x:.5f}  {y:.5f}  {z:.5f}  1\n"
        for i, (x, y, z) in enumerate(rng.random((listed, 3)))
    )
    return head + _SITE_COLUMNS + rows


def _best_of(repeats: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _isolation_cost(count: int) -> None:
    """Print what reading ``count`` 8-site CIFs costs in this process and in the workers."""
    import psutil

    text = _rock_salt(1).to(fmt="cif")
    started = time.perf_counter()
    for _ in range(count):
        parse_structure(text)
    here_ms = (time.perf_counter() - started) / count * 1000
    workers = StructureWorkers()
    try:
        started = time.perf_counter()
        workers.read([(text, None)])
        start_s = time.perf_counter() - started
        started = time.perf_counter()
        workers.read([(text, None)] * count)
        batch_ms = (time.perf_counter() - started) / count * 1000
        started = time.perf_counter()
        for _ in range(count // 10):
            workers.read([(text, None)])
        one_ms = (time.perf_counter() - started) / (count // 10) * 1000
        children = psutil.Process().children(recursive=True)
        rss_mb = sorted(child.memory_info().rss / 2**20 for child in children)
    finally:
        workers.close()
    n = DEFAULT_ISOLATION.workers
    print(f"\n| reading an 8-site NiO CIF ({count} of them) | ms per structure |")
    print("| --- | --- |")
    print(f"| in this process (not isolated) | {here_ms:.2f} |")
    print(f"| in {n} worker processes, {count} in one call | {batch_ms:.2f} |")
    print(f"| in {n} worker processes, one per call | {one_ms:.2f} |")
    print(
        f"\nStarting the {n} workers (spawn, pymatgen loaded) took {start_s:.2f} s; their "
        f"memory (RSS) once warm: {', '.join(f'{mb:.0f}' for mb in rss_mb)} MiB, "
        "multiprocessing's resource tracker included (the smallest)."
    )


def main() -> None:
    """Print the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.structures", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes only, one repeat")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pymatgen's CIF remarks are not what is measured
    repeats = 1 if args.quick else 3
    cells = (1, 2, 3) if args.quick else (1, 3, 5, 6, 7)
    listed = (2, 5) if args.quick else (2, 5, 10, 20)
    parse_structure(_rock_salt(1).to(fmt="cif"))  # the first call imports pymatgen's readers
    print(f"# Reading structures ({describe_machine()})\n")
    print(f"Best of {repeats}; bounds by default: {DEFAULT_STRUCTURE_LIMITS}.\n")
    print("| structure | sites | CIF s | POSCAR s |")
    print("| --- | --- | --- | --- |")
    for n in cells:
        structure = _rock_salt(n)
        cif, poscar = structure.to(fmt="cif"), structure.to(fmt="poscar")
        cif_s = _best_of(repeats, partial(parse_structure, cif, limits=_UNBOUNDED))
        poscar_s = _best_of(repeats, partial(parse_structure, poscar, limits=_UNBOUNDED))
        print(f"| NiO {n}x{n}x{n} cells, P1 | {len(structure)} | {cif_s:.3f} | {poscar_s:.3f} |")
    print("\n| CIF | site images | sites built | s | refused by default |")
    print("| --- | --- | --- | --- | --- |")
    for k in listed:
        text = _fm3m_general_positions(k)
        started = time.perf_counter()
        parsed = parse_structure(text, limits=_UNBOUNDED)
        seconds = time.perf_counter() - started
        refused = k * 192 > DEFAULT_STRUCTURE_LIMITS.max_cif_images
        print(
            f"| {k} general sites of Fm-3m | {k * 192} | {parsed.n_sites} | {seconds:.3f} | "
            f"{'yes' if refused else 'no'} |"
        )
    _isolation_cost(50 if args.quick else 400)


if __name__ == "__main__":
    main()
