"""Hostile structure files: refused at their root, and read in worker processes regardless.

Each input here reproduces a hole found by a hostile audit of the server as the Dockerfile
starts it: a magnetic CIF whose transformation sympy would compute for a minute, format
detection quadratic in newlines, POSCAR counts pymatgen's ``int`` accepts (``1_000_000_000``,
``+1e7``, ``²``), Structure JSON that makes monty import modules, symmetry operations counted
under keys the cap missed, unphysical cells predicted instead of refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from pymatgen.core.lattice import Lattice
from pymatgen.core.structure import Structure

from app.core.errors import InvalidStructureError, ServiceBusyError, StructureTooLargeError
from app.core.structure_workers import IsolationLimits, StructureWorkers
from app.core.structures import (
    StructureFormat,
    StructureLimits,
    detect_format,
    parse_structure,
)
from bench.server import free_port, serve_flags, start_server, wait_until_healthy

CELL = (
    "_cell_length_a {a}\n_cell_length_b 4.17\n_cell_length_c 4.17\n"
    "_cell_angle_alpha {alpha}\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
)
SITES = (
    "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
    "_atom_site_fract_z\n_atom_site_occupancy\nNi1 {symbol} 0 0 0 {occupancy}\n"
    "O1 O 0.5 0.5 0.5 1\n"
)


def cif(
    *, a: str = "4.17", alpha: str = "90", symbol: str = "Ni", occupancy: str = "1", head: str = ""
) -> str:
    """A two-site NiO cell as a CIF, with one of its values changed."""
    return (
        "data_NiO\n"
        + head
        + CELL.format(a=a, alpha=alpha)
        + SITES.format(symbol=symbol, occupancy=occupancy)
    )


def poscar(counts: str = "1 1", *, scale: str = "1.0", species: str = "Ni O") -> str:
    """A two-site NiO cell as a POSCAR, with its scale, species or counts changed."""
    return (
        f"NiO\n{scale}\n4.17 0 0\n0 4.17 0\n0 0 4.17\n{species}\n{counts}\nDirect\n"
        "0 0 0\n0.5 0.5 0.5\n"
    )


def structure_json(properties: object) -> str:
    """NiO as pymatgen's Structure JSON, its first site's properties replaced."""
    document = rock_salt().as_dict()
    document["sites"][0]["properties"] = properties
    return json.dumps(document)


def rock_salt() -> Structure:
    """NiO in its conventional cubic cell."""
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.177), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def operations_cif(key: str, count: int) -> str:
    """A one-site CIF listing ``count`` distinct symmetry operations under ``key``."""
    operations = "\n".join(f"'x+{i}/{count},y,z'" for i in range(count))
    return (
        "data_x\n"
        + CELL.format(a="4.17", alpha="90")
        + (
            f"loop_\n{key}\n{operations}\n"
            "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
            "Ni1 0 0 0\n"
        )
    )


MAGNETIC_OPERATIONS = (
    "data_x\n"
    + CELL.format(a="4.17", alpha="90")
    + "loop_\n_space_group_symop_magn_operation.xyz\n"
    + "\n".join(f"'x+{i}/100,y,z,+1'" for i in range(100))
    + "\nloop_\n_space_group_symop_magn_centering.xyz\n"
    + "\n".join(f"'x,y+{i}/100,z,+1'" for i in range(100))
    + "\nloop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
    + "Ni1 0 0 0\n"
)
XSF_HEAD = "CRYSTAL\nPRIMVEC\n4.17 0 0\n0 4.17 0\n0 0 4.17\nPRIMCOORD\n"


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        # Critical 1: sympy would compute 9**9**8 exactly, holding the interpreter.
        (
            cif(head="_space_group_magn.transform_BNS_Pp_abc '9**9**8*a,b,c;0,0,0'\n"),
            StructureFormat.CIF,
            "is not a setting transformation",
        ),
        (
            cif(head="_space_group_magn.transform_BNS_Pp_abc '__import__(\"os\")'\n"),
            StructureFormat.CIF,
            "is not a setting transformation",
        ),
        # Critical 3 and medium 8: counts pymatgen's int() reads, or that break it.
        (poscar("1_000_000_000 1"), StructureFormat.POSCAR, "'1_000_000_000' is not a whole"),
        (poscar("+10000000 1"), StructureFormat.POSCAR, "'\\+10000000' is not a whole"),
        (poscar("1 ²"), StructureFormat.POSCAR, "'²' is not a whole number"),
        (poscar("9" * 5000 + " 1"), StructureFormat.POSCAR, "is not a whole number"),
        (poscar("1 1", scale="0"), StructureFormat.POSCAR, "scale '0' is not a finite number"),
        (poscar("1 1", scale="nan"), StructureFormat.POSCAR, "is not a finite number"),
        (
            poscar("1 1").replace("4.17 0 0", "0 0 0"),
            StructureFormat.POSCAR,
            "lattice vectors must have finite lengths above 0",
        ),
        (
            poscar("1 1").replace("0.5 0.5 0.5", "nan 0.5 0.5"),
            StructureFormat.POSCAR,
            "coordinates are not finite",
        ),
        # High 4: monty would import 'this' (and print the Zen of Python).
        (
            structure_json(None).replace(
                '"@module": "pymatgen.core.structure"', '"@module": "this"'
            ),
            None,
            "not '@module' 'this'",
        ),
        (
            json.dumps({**rock_salt().as_dict(), "lattice": {"@module": "this", "@callable": "s"}}),
            None,
            "may not name a callable",
        ),
        # Low 12: unphysical cells, and sites pymatgen drops without a word.
        (cif(a="1e30"), StructureFormat.CIF, "_cell_length_a is '1e30'"),
        (cif(a="-4"), StructureFormat.CIF, "_cell_length_a is '-4'"),
        (cif(alpha="200"), StructureFormat.CIF, "_cell_angle_alpha is '200'"),
        (cif(occupancy="-1"), StructureFormat.CIF, "occupancy '-1'"),
        (cif(occupancy="0"), StructureFormat.CIF, "occupancy '0'"),
        (cif(symbol="OH"), StructureFormat.CIF, "type symbol 'OH' is not an element"),
        (XSF_HEAD + "2 1\nNi 0 0 0\nO nan 2 2\n", StructureFormat.XSF, "not finite"),
        (XSF_HEAD + "30000000 1\nNi 0 0 0\nO 2 2 2\n", StructureFormat.XSF, "30000000 sites"),
        (XSF_HEAD + "3 1\nNi 0 0 0\nO 2 2 2\n", StructureFormat.XSF, "declares 3 atoms"),
        (
            XSF_HEAD + "2 1\nNi 0 0 0\nO 2 2 2\nBEGIN_BLOCK_DATAGRID_3D\n",
            StructureFormat.XSF,
            "holds data grids",
        ),
    ],
)
def test_hostile_files_are_refused_before_or_after_pymatgen(
    text: str, fmt: StructureFormat | None, message: str
) -> None:
    with pytest.raises(InvalidStructureError, match=message):
        parse_structure(text, fmt)


def test_species_over_two_lines_cannot_hide_their_counts() -> None:
    two_lines = poscar("900000\n900", species="Ni\nO")
    with pytest.raises(StructureTooLargeError, match="900900 sites declared"):
        parse_structure(two_lines, StructureFormat.POSCAR)


@pytest.mark.parametrize(
    "key",
    [
        "_symmetry_equiv_pos_as_xyz_",
        "_space_group_symop_operation_xyz_",
        "_space_group_symop.operation_xyz",
    ],
)
def test_the_symmetry_cap_counts_every_key_pymatgen_reads(key: str) -> None:
    with pytest.raises(StructureTooLargeError, match="10000 symmetry operations"):
        parse_structure(operations_cif(key, 10_000), StructureFormat.CIF)


def test_the_symmetry_cap_counts_magnetic_operations_times_centerings() -> None:
    with pytest.raises(StructureTooLargeError, match="10000 symmetry operations"):
        parse_structure(MAGNETIC_OPERATIONS, StructureFormat.CIF)


def test_json_site_properties_never_reach_montys_decoder() -> None:
    parsed = parse_structure(structure_json({"x": {"@module": "this", "@callable": "s"}}))
    assert parsed.compound.reduced_formula == "NiO"


def test_format_detection_is_linear_in_the_newlines() -> None:
    # Quadratic before: 200,000 newlines took 35 s of the server's event loop.
    started = time.perf_counter()
    assert detect_format("x" + "\n" * 200_000 + "y") is StructureFormat.POSCAR
    assert time.perf_counter() - started < 1.0


def test_a_sound_cif_still_reads() -> None:
    parsed = parse_structure(cif(), StructureFormat.CIF)
    assert parsed.compound.reduced_formula == "NiO"


def _big_p1_cif(repeat: int) -> str:
    return rock_salt().make_supercell([repeat] * 3, in_place=False).to(fmt="cif")


@pytest.fixture(scope="module")
def workers() -> Iterator[StructureWorkers]:
    pool = StructureWorkers(
        IsolationLimits(workers=1, timeout_s=1.0, memory_mb=256, max_requests=1, deadline_s=30),
        StructureLimits(max_sites=100_000, max_cif_images=1_000_000),
    )
    try:
        yield pool
    finally:
        pool.close()


def test_a_read_past_its_deadline_is_killed_and_the_worker_replaced(
    workers: StructureWorkers,
) -> None:
    slow = _big_p1_cif(9)  # 5,832 sites: several seconds of pymatgen
    (outcome,) = workers.read([(slow, StructureFormat.CIF)])
    assert isinstance(outcome, InvalidStructureError)
    assert "took longer than 1 s" in str(outcome)
    (after,) = workers.read([(cif(), StructureFormat.CIF)])
    assert not isinstance(after, Exception)
    assert after.compound.reduced_formula == "NiO"


def test_a_worker_cannot_take_more_memory_than_its_cap(workers: StructureWorkers) -> None:
    # Reaches into the pool: no structure that passes the checks allocates gigabytes.
    pool = workers._started()
    with pytest.raises(MemoryError):
        pool.schedule(bytearray, args=(1 << 30,)).result(timeout=60)
    assert len(pool.schedule(bytearray, args=(1 << 20,)).result(timeout=60)) == 1 << 20


def test_a_read_beyond_the_callers_allowed_is_refused_at_once(workers: StructureWorkers) -> None:
    slow = _big_p1_cif(9)
    reading = threading.Thread(target=workers.read, args=([(slow, StructureFormat.CIF)],))
    reading.start()
    time.sleep(0.2)
    try:
        with pytest.raises(ServiceBusyError, match="1 requests are reading structures"):
            workers.read([(cif(), StructureFormat.CIF)])
    finally:
        reading.join()


def test_structures_past_the_calls_deadline_fail_alone() -> None:
    pool = StructureWorkers(
        IsolationLimits(workers=1, timeout_s=60, deadline_s=2.0),
        StructureLimits(max_sites=100_000, max_cif_images=1_000_000),
    )
    try:
        pool.read([(cif(), StructureFormat.CIF)])  # started, pymatgen loaded
        slow = _big_p1_cif(9)
        outcomes = pool.read(
            [(cif(), StructureFormat.CIF), (slow, StructureFormat.CIF), (cif(), None)]
        )
        assert not isinstance(outcomes[0], Exception)
        for late in outcomes[1:]:
            assert isinstance(late, InvalidStructureError)
            assert "took longer than 2 s together" in str(late)
    finally:
        pool.close()


def test_one_bad_file_fails_alone_in_a_batch(workers: StructureWorkers) -> None:
    outcomes = workers.read(
        [(cif(), StructureFormat.CIF), (poscar("1 ²"), None), (cif(), StructureFormat.CIF)]
    )
    assert [type(o).__name__ for o in outcomes] == [
        "ParsedStructure",
        "InvalidStructureError",
        "ParsedStructure",
    ]


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[tuple[psutil.Process, str, list[str]]]:
    """The service as the image starts it, reading structures slowly enough to be killed."""
    port = free_port()
    env = {
        "MAGORDER_MODEL_DIR": str(model_dir),
        "MAGORDER_STRUCTURE_TIMEOUT_S": "1",
        "MAGORDER_MAX_STRUCTURE_SITES": "100000",
        "MAGORDER_MAX_CIF_IMAGES": "1000000",
        "MAGORDER_MAX_BODY_BYTES": str(8 << 20),
    }
    process = start_server(port, env=env, capture_output=True, uvicorn_args=serve_flags())
    base_url = f"http://127.0.0.1:{port}"
    log: list[str] = []
    try:
        wait_until_healthy(process, base_url, 120)
        assert process.stdout is not None
        reader = threading.Thread(target=lambda: log.extend(process.stdout or []), daemon=True)
        reader.start()
        yield psutil.Process(process.pid), base_url, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def _health_while(base_url: str, request: threading.Thread) -> list[float]:
    """How long each /health took, polled until ``request`` ends."""
    waits: list[float] = []
    request.start()
    with httpx.Client(timeout=10) as client:
        while request.is_alive() or not waits:
            started = time.perf_counter()
            assert client.get(f"{base_url}/health").status_code == 200
            waits.append(time.perf_counter() - started)
            time.sleep(0.05)
    request.join()
    return waits


def test_the_server_stays_answering_while_a_structure_is_killed(
    server: tuple[psutil.Process, str, list[str]],
) -> None:
    process, base_url, _ = server
    answers: list[httpx.Response] = []
    slow = _big_p1_cif(9)

    def send() -> None:
        answers.append(
            httpx.post(f"{base_url}/predict/structure", json={"structure": slow}, timeout=60)
        )

    rss_before = process.memory_info().rss
    waits = _health_while(base_url, threading.Thread(target=send))
    (answer,) = answers
    assert answer.status_code == 422
    assert "took longer than 1 s" in answer.json()["error"]["message"]
    assert max(waits) < 2.0
    assert process.memory_info().rss - rss_before < 300 << 20


def test_a_batch_with_a_bad_file_answers_for_every_item(
    server: tuple[psutil.Process, str, list[str]],
) -> None:
    _, base_url, log = server
    items = [
        {"structure": cif(), "id": "good"},
        {"structure": poscar("1 ²"), "id": "bad count"},
        {"structure": structure_json(None).replace("pymatgen.core.structure", "this")},
        {"structure": cif(a="0"), "id": "no cell"},
    ]
    response = httpx.post(f"{base_url}/predict/structure/batch", json={"items": items}, timeout=60)
    assert response.status_code == 200
    statuses = [result.get("status", "ok") for result in response.json()["results"]]
    assert statuses == ["ok", "error", "error", "error"]
    assert not any("Beautiful is better than ugly" in line for line in log)
