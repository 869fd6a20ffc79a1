"""The density estimator end to end: training command, export, load-time checks, serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.cli.main import main as cli_main
from app.core.errors import ModelLoadError
from app.core.features import DENSITY_INDEX, DensitySource, featurize, parse_compound
from app.core.model_card import (
    DENSITY_DIRNAME,
    EXPERIMENT_DIRNAME,
    METADATA_FILENAME,
    MODEL_CARD_FILENAME,
    DensityMetadata,
    read_metadata,
)
from app.core.model_manifest import write_manifest
from app.core.predictor import Predictor
from model_training.__main__ import main as training_main
from tests.conftest import DENSITY_TEST_VERSION
from tests.snapshot_fixture import write_snapshot


def test_the_run_exports_a_checked_estimator_with_its_card(density_model_dir: Path) -> None:
    head = density_model_dir / DENSITY_DIRNAME
    card = read_metadata(head, DensityMetadata)
    assert card.model_version == DENSITY_TEST_VERSION
    metrics = card.metrics
    assert {"mean", "lightgbm", "magorder"} <= metrics.keys()
    assert card.test_mae == pytest.approx(metrics["magorder"]["mae"])
    # Real figures on the same rows: the trees find the fixture's density-by-chemistry (the
    # network, sized for 38,000 rows, is not expected to on a hundred).
    assert metrics["lightgbm"]["mae"] < metrics["mean"]["mae"]
    assert 0 < metrics["magorder"]["mae"] < 30
    assert metrics["mp_head_with_estimated_density"]["rows"] == metrics["test_rows"]
    text = (head / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    assert "## Every model on the same test rows" in text
    assert "The Materials Project head with an estimated density" in text
    predictor = Predictor.load(density_model_dir)
    assert predictor.density_estimator is not None


def test_the_estimate_never_reads_the_density_slot(density_model_dir: Path) -> None:
    estimator = Predictor.load(density_model_dir).density_estimator
    assert estimator is not None
    rows = np.stack([featurize("Fe2O3", 5.0), featurize("NaCl", 2.0)])
    changed = rows.copy()
    changed[:, DENSITY_INDEX] = [np.nan, 29.0]
    assert np.array_equal(estimator.estimate(rows), estimator.estimate(changed))
    assert np.all(estimator.estimate(rows) > 0)


def test_an_edited_estimator_is_refused(tmp_path: Path, density_model_dir: Path) -> None:
    edited = shutil.copytree(density_model_dir, tmp_path / "edited")
    card_path = edited / DENSITY_DIRNAME / METADATA_FILENAME
    card = json.loads(card_path.read_text())
    card["output_columns"] = ["density_kg_m3"]
    card_path.write_text(json.dumps(card))
    write_manifest(card_path.parent)  # sealed again, as a careless re-export would
    with pytest.raises(ModelLoadError, match=r"density estimator .*density_kg_m3"):
        Predictor.load(edited)


def test_retraining_the_mp_head_keeps_the_heads_beside_it(
    tmp_path: Path, density_model_dir: Path
) -> None:
    served = shutil.copytree(density_model_dir, tmp_path / "model")
    (served / EXPERIMENT_DIRNAME).mkdir()  # an experiment head's place, kept as it is
    snapshot = write_snapshot(tmp_path / "mp.csv", rows_per_class=12)
    args = ["train", "--data", str(snapshot), "--output", str(served), "--epochs", "1"]
    assert training_main([*args, "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    assert (served / DENSITY_DIRNAME / METADATA_FILENAME).is_file()
    assert (served / EXPERIMENT_DIRNAME).is_dir()


def test_a_formula_without_density_is_predicted_with_the_estimate(
    density_client: TestClient,
) -> None:
    estimated = density_client.post("/predict", json={"formula": "Fe2O3"})
    assert estimated.status_code == 200
    body = estimated.json()
    assert body["density_source"] == "estimated"
    assert 0 < body["density"] <= 30
    assert any("density not given: estimated" in w for w in body["warnings"])
    # The same answer as sending that density: the estimate is the density used.
    given = density_client.post("/predict", json={"formula": "Fe2O3", "density": body["density"]})
    assert given.json()["density_source"] == "given"
    assert given.json()["probabilities"] == pytest.approx(body["probabilities"], abs=1e-5)
    assert not any("density not given" in w for w in given.json()["warnings"])
    null = density_client.post("/predict", json={"formula": "Fe2O3", "density": None})
    assert null.json()["density"] == body["density"]


def test_batch_items_carry_their_ids_and_each_density_source(density_client: TestClient) -> None:
    items = [
        {"formula": "NiO", "density": 6.67, "id": "given"},
        {"formula": "NiO", "id": "estimated"},
        {"formula": "Xx", "id": "bad"},
        {"formula": "NiO", "id": "x" * 201},
    ]
    response = density_client.post("/predict/batch", json={"items": items})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r.get("id") for r in results[:3]] == ["given", "estimated", "bad"]
    assert [r.get("density_source") for r in results[:2]] == ["given", "estimated"]
    assert results[2]["status"] == "error"
    assert results[3]["status"] == "error"
    assert "id" in results[3]["error"]["message"]


def test_without_an_estimator_a_missing_density_is_a_clear_422(client: TestClient) -> None:
    response = client.post("/predict", json={"formula": "Fe2O3"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "density_required"
    assert error["field"] == "density"
    assert "send the density" in error["message"]
    batch = client.post(
        "/predict/batch", json={"items": [{"formula": "Fe2O3"}, {"formula": "NiO", "density": 6}]}
    )
    first, second = batch.json()["results"]
    assert first["error"]["type"] == "density_required"
    assert second["status"] == "ok"


def test_the_cli_takes_a_csv_without_density(
    tmp_path: Path, density_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("name,formula\na,Fe2O3\nb,NaCl\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    code = cli_main(["predict", str(source), "-o", str(out), "--model-dir", str(density_model_dir)])
    capsys.readouterr()
    assert code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
    assert [r["density_source"] for r in rows] == ["estimated", "estimated"]
    assert all(float(r["density_used"]) > 0 for r in rows)


def test_parse_compound_marks_a_missing_density_for_estimation() -> None:
    compound = parse_compound("Fe2O3", None)
    assert compound.density_source is DensitySource.ESTIMATED
    assert np.isnan(compound.density)
    assert parse_compound("Fe2O3", 5.2).density_source is DensitySource.GIVEN


def test_health_model_and_card_describe_the_estimator(density_client: TestClient) -> None:
    assert density_client.get("/health").json()["density_model_version"] == DENSITY_TEST_VERSION
    described = density_client.get("/model").json()["density"]
    assert described["model_version"] == DENSITY_TEST_VERSION
    assert described["output_columns"] == ["density_g_cm3"]
    card = density_client.get("/model/card").text
    assert f"## magorder density estimator — {DENSITY_TEST_VERSION}" in card
