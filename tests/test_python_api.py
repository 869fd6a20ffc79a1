"""``import magorder``: in-process and REST, the same answers as the command line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import magorder
from app.cli.main import main as cli_main
from app.core.columns import ADDED_COLUMNS
from bench.server import free_port, running_server
from tests.test_structures import disordered, rock_salt

FORMULAS = ["NiO", "Fe2O3", "Xx", "NaCl", "MnO", "CaTiO3", "Fe3O4"]
DENSITIES: list[float | None] = [6.67, None, 3.0, 2.16, None, 4.04, 5.17]


@pytest.fixture(scope="module")
def model(density_model_dir: Path) -> magorder.Magorder:
    return magorder.Magorder.load(density_model_dir)


@pytest.fixture(scope="module")
def server_url(density_model_dir: Path) -> Iterator[str]:
    """A real uvicorn on the model with a density estimator, taking batches of 3 at most."""
    with running_server(density_model_dir, settings={"MAGORDER_MAX_BATCH_SIZE": "3"}) as server:
        yield server.base_url


def test_formulas_come_back_as_a_frame_of_the_cli_columns(model: magorder.Magorder) -> None:
    frame = model.predict(FORMULAS, DENSITIES, ids=[f"c{i}" for i in range(len(FORMULAS))])
    assert list(frame.columns) == ["id", "formula", "density", *ADDED_COLUMNS]
    assert frame["id"].tolist()[:2] == ["c0", "c1"]
    assert frame.loc[0, "density_source"] == "given"
    assert frame.loc[1, "density_source"] == "estimated"
    assert "unknown element" in frame.loc[2, "error"]
    ok = frame[frame["error"] == ""]
    sums = ok[["p_FM", "p_NM", "p_FiM", "p_AFM"]].sum(axis=1)
    assert sums.to_numpy() == pytest.approx(1.0, abs=1e-4)
    assert frame["p_FM"].dtype.kind == "f"
    assert model.predict("NiO", 6.67).loc[0, "prediction"] == frame.loc[0, "prediction"]


def test_the_python_api_and_the_cli_give_identical_results(
    tmp_path: Path,
    model: magorder.Magorder,
    density_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "in.csv"
    pd.DataFrame({"formula": FORMULAS, "density": DENSITIES}).to_csv(source, index=False)
    out = tmp_path / "out.csv"
    cli_main(["predict", str(source), "-o", str(out), "--model-dir", str(density_model_dir)])
    capsys.readouterr()
    written = pd.read_csv(out, keep_default_na=False, dtype=str)
    frame = model.predict_frame(pd.read_csv(source))
    for column in ADDED_COLUMNS:
        ours = frame[column].map(lambda v: "" if pd.isna(v) else v).astype(str)
        theirs = written[column]
        if frame[column].dtype.kind == "f":
            numbers = pd.to_numeric(theirs.replace("", None))
            assert frame[column].fillna(-1).tolist() == numbers.fillna(-1).tolist(), column
        else:
            assert ours.tolist() == theirs.tolist(), column


def test_structures_as_objects_text_or_paths(tmp_path: Path, model: magorder.Magorder) -> None:
    path = tmp_path / "NaCl.cif"
    path.write_text(rock_salt(5.64, "Na", "Cl").to(fmt="cif"), encoding="utf-8")
    frame = model.predict_structures([rock_salt(), disordered().to(fmt="cif"), path, "junk"])
    assert frame["formula"].tolist()[:3] == ["Ni4O4", "Fe0.5Co0.5", "Na4Cl4"]
    assert frame["id"].tolist()[2] == str(path)
    assert (frame["density_source"][:3] == "structure").all()
    assert frame.loc[3, "error"] != ""


def test_the_rest_client_batches_to_the_server_and_answers_the_same(
    server_url: str, model: magorder.Magorder
) -> None:
    with magorder.MagorderClient(server_url) as client:
        remote = client.predict(FORMULAS, DENSITIES, ids=[f"c{i}" for i in range(len(FORMULAS))])
        structures = client.predict_structures([rock_salt(), "junk"], ids=["NiO", "junk"])
        assert client.model_version == model.model_version
    local = model.predict(FORMULAS, DENSITIES, ids=[f"c{i}" for i in range(len(FORMULAS))])
    # Seven items in batches of three: ids and order survive the server's limit.
    assert remote["id"].tolist() == local["id"].tolist()
    pd.testing.assert_frame_equal(remote, local)
    assert structures["id"].tolist() == ["NiO", "junk"]
    assert structures.loc[0, "reduced_formula"] == "NiO"
    assert structures.loc[1, "error"] != ""


def test_an_unreachable_server_is_a_backend_error() -> None:
    with pytest.raises(magorder.BackendError, match="cannot reach"):
        magorder.MagorderClient(f"http://127.0.0.1:{free_port()}", retries=0)
