"""Crystal structures in: the core reader, the JSON and upload routes, batches and the CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pymatgen.core.lattice import Lattice
from pymatgen.core.structure import Structure

from app.cli.main import main as cli_main
from app.core.errors import InvalidStructureError, StructureTooLargeError
from app.core.features import DensitySource
from app.core.structures import (
    StructureFormat,
    StructureLimits,
    detect_format,
    format_of_filename,
    parse_structure,
)


def rock_salt(a: float = 4.177, cation: str = "Ni", anion: str = "O") -> Structure:
    """An ordered rock-salt structure (NiO by default), written by pymatgen."""
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def disordered() -> Structure:
    """A bcc Fe-Co alloy with one half-and-half site: a disordered structure."""
    return Structure(Lattice.cubic(2.86), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])


@pytest.mark.parametrize("fmt", list(StructureFormat))
def test_every_format_gives_the_composition_and_density_of_the_cell(fmt: StructureFormat) -> None:
    structure = rock_salt()
    text = structure.to(fmt=fmt.value)
    assert detect_format(text) is fmt
    parsed = parse_structure(text)
    assert parsed.format is fmt
    assert parsed.compound.reduced_formula == "NiO"
    assert parsed.compound.formula == "Ni4O4"
    assert parsed.compound.density == pytest.approx(structure.density, abs=1e-3)
    assert parsed.compound.density_source is DensitySource.STRUCTURE
    assert parsed.n_sites == 8
    assert parsed.is_ordered
    assert parsed.warnings == ()


def test_a_disordered_structure_gives_a_fractional_composition_and_says_so() -> None:
    parsed = parse_structure(disordered().to(fmt="cif"))
    assert parsed.compound.amounts == {"Fe": 0.5, "Co": 0.5}
    assert not parsed.is_ordered
    assert any("disordered structure" in w for w in parsed.warnings)


def test_file_names_say_the_format() -> None:
    assert format_of_filename("relaxed/Fe2O3.cif") is StructureFormat.CIF
    assert format_of_filename("CONTCAR_relaxed") is StructureFormat.POSCAR
    assert format_of_filename("x.vasp") is StructureFormat.POSCAR
    assert format_of_filename("notes.txt") is None


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("", None, "structure is empty"),
        ("hello world", None, "not a readable structure"),
        ("data_x\n_cell_length_a 3\n", StructureFormat.CIF, "no atom sites"),
        ('{"sites": 3}', None, "not a readable JSON structure"),
    ],
)
def test_what_is_not_a_structure_is_refused_naming_why(
    text: str, fmt: StructureFormat | None, message: str
) -> None:
    with pytest.raises(InvalidStructureError, match=message):
        parse_structure(text, fmt)


def test_a_cif_of_several_structures_is_refused_naming_them() -> None:
    first = rock_salt().to(fmt="cif")
    second = rock_salt(5.64, "Na", "Cl").to(fmt="cif")
    with pytest.raises(InvalidStructureError, match=r"holds 2 structures \(data_NiO, data_NaCl\)"):
        parse_structure(first + "\n" + second)


def test_huge_structures_are_refused_before_pymatgen_builds_them() -> None:
    limits = StructureLimits(max_bytes=1 << 20, max_sites=50, max_cif_images=500)
    big = rock_salt().make_supercell([3, 3, 3], in_place=False)  # 216 sites
    with pytest.raises(StructureTooLargeError, match="216 sites declared; at most 50"):
        parse_structure(big.to(fmt="poscar"), limits=limits)
    with pytest.raises(StructureTooLargeError, match="216 sites; at most 50"):
        parse_structure(big.to(fmt="json"), limits=limits)
    # Three listed sites times 192 operations of Fm-3m: 576 images, over the 500 allowed.
    symmetrized = rock_salt().to(fmt="cif", symprec=0.1)
    cif = symmetrized.rstrip("\n") + "\n  O  O2  8  0.25  0.25  0.25  1\n"
    with pytest.raises(StructureTooLargeError, match="up to 576 site images"):
        parse_structure(cif, limits=limits)
    with pytest.raises(StructureTooLargeError, match="bytes long"):
        parse_structure(" " * 2000 + "x", limits=StructureLimits(max_bytes=1000))


def _probabilities(body: dict[str, object]) -> dict[str, float]:
    probabilities = body["probabilities"]
    assert isinstance(probabilities, dict)
    return probabilities


def test_a_structure_is_predicted_as_its_formula_and_density_are(client: TestClient) -> None:
    structure = rock_salt()
    response = client.post("/predict/structure", json={"structure": structure.to(fmt="cif")})
    assert response.status_code == 200
    body = response.json()
    assert body["structure"] == {"format": "cif", "n_sites": 8, "is_ordered": True}
    assert (body["reduced_formula"], body["density_source"]) == ("NiO", "structure")
    same = client.post("/predict", json={"formula": "NiO", "density": body["density"]})
    assert _probabilities(body) == pytest.approx(_probabilities(same.json()), abs=1e-6)


def test_a_structure_file_can_be_uploaded(client: TestClient) -> None:
    poscar = rock_salt().to(fmt="poscar")
    response = client.post("/predict/structure", files={"file": ("POSCAR", poscar)})
    assert response.status_code == 200
    assert response.json()["structure"]["format"] == "poscar"
    named = client.post(
        "/predict/structure", files={"file": ("s.txt", poscar)}, data={"format": "poscar"}
    )
    assert named.status_code == 200


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"json": {"structure": "garbage"}}, 422, "not a readable structure"),
        ({"json": {"formula": "NiO"}}, 422, "structure: Field required"),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "multipart/form-data"),
        ({"files": {"file": ("a.cif", b"\xff\xfe\x00")}}, 422, "is not UTF-8 text"),
        ({"files": {"other": ("a.cif", b"data_")}}, 422, "no file in the form's 'file' field"),
        (
            {"files": {"file": ("a.cif", b"x")}, "data": {"format": "pdb"}},
            422,
            "format must be one of",
        ),
    ],
)
def test_bad_structure_requests_get_a_4xx_naming_the_problem(
    client: TestClient, request_kwargs: dict[str, object], status: int, message: str
) -> None:
    response = client.post("/predict/structure", **request_kwargs)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


def test_a_structure_over_the_site_limit_is_a_413(model_dir: Path) -> None:
    from app.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(model_dir, max_structure_sites=10)
    with TestClient(create_app(settings)) as small:
        big = rock_salt().make_supercell([2, 2, 2], in_place=False).to(fmt="poscar")
        response = small.post("/predict/structure", json={"structure": big})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "structure_too_large"


def test_structure_batches_keep_ids_and_fail_items_alone(client: TestClient) -> None:
    items = [
        {"structure": rock_salt().to(fmt="cif"), "id": "NiO"},
        {"structure": "junk", "format": "cif", "id": "junk"},
        {"structure": disordered().to(fmt="json"), "id": "FeCo"},
    ]
    response = client.post("/predict/structure/batch", json={"items": items})
    assert response.status_code == 200
    ok, bad, alloy = response.json()["results"]
    assert (ok["id"], ok["status"], ok["reduced_formula"]) == ("NiO", "ok", "NiO")
    assert (bad["id"], bad["status"], bad["error"]["type"]) == (
        "junk",
        "error",
        "invalid_structure",
    )
    assert alloy["structure"]["is_ordered"] is False
    assert any("disordered" in w for w in alloy["warnings"])


def test_several_files_can_be_uploaded_at_once(client: TestClient) -> None:
    files = [
        ("files", ("NiO.cif", rock_salt().to(fmt="cif"))),
        ("files", ("NaCl.vasp", rock_salt(5.64, "Na", "Cl").to(fmt="poscar"))),
    ]
    response = client.post("/predict/structure/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["id"], r["reduced_formula"]) for r in results] == [
        ("NiO.cif", "NiO"),
        ("NaCl.vasp", "NaCl"),
    ]


def test_the_cli_screens_a_directory_and_files_of_structures(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "relaxed"
    folder.mkdir()
    (folder / "NiO.cif").write_text(rock_salt().to(fmt="cif"), encoding="utf-8")
    (folder / "POSCAR").write_text(rock_salt(5.64, "Na", "Cl").to(fmt="poscar"), encoding="utf-8")
    (folder / "broken.cif").write_text("data_broken\n", encoding="utf-8")
    (folder / "notes.txt").write_text("not a structure", encoding="utf-8")
    out = tmp_path / "out.csv"
    code = cli_main(["predict", str(folder), "-o", str(out), "--model-dir", str(model_dir)])
    log = capsys.readouterr().err
    assert code == 1  # broken.cif failed
    assert "3 rows: 2 predicted" in log
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [Path(r["file"]).name for r in rows] == ["NiO.cif", "POSCAR", "broken.cif"]
    assert [r["reduced_formula"] for r in rows[:2]] == ["NiO", "NaCl"]
    assert rows[0]["density_source"] == "structure"
    assert "no atom sites" in rows[2]["error"]
    single = cli_main(["predict", str(folder / "NiO.cif"), "--model-dir", str(model_dir)])
    (alone,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert single == 0
    assert alone["p_FM"] == rows[0]["p_FM"]
    assert np.isclose(float(rows[0]["density_used"]), rock_salt().density, atol=1e-3)


def test_the_cli_refuses_a_mix_of_csv_and_structures(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.cif").write_text(rock_salt().to(fmt="cif"), encoding="utf-8")
    (tmp_path / "b.csv").write_text("formula,density\nNiO,6.67\n", encoding="utf-8")
    code = cli_main(["predict", str(tmp_path / "a.cif"), str(tmp_path / "b.csv")])
    assert code == 2
    assert "several inputs must all be structures" in capsys.readouterr().err
