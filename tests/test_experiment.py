"""The experiment head end to end: fixture snapshot, cleaning, split, training, export, serving."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pymatgen.core.periodic_table import Element

from app.cli.main import main as cli_main
from app.core.errors import ModelLoadError
from app.core.experiment import FROZEN_4F_ELEMENTS, experimental_p_nm
from app.core.features import DENSITY_INDEX, featurize, parse_formula
from app.core.model_card import (
    EXPERIMENT_DIRNAME,
    METADATA_FILENAME,
    MODEL_CARD_FILENAME,
    ExperimentMetadata,
    read_metadata,
)
from app.core.model_manifest import write_manifest
from app.core.model_runtime import ModelRuntime
from app.core.predictor import Predictor
from app.main import create_app
from model_training.__main__ import main
from model_training.data import SnapshotError
from model_training.experiment.card import CONFUSION_PLOT, PARITY_PLOT
from model_training.experiment.data import load_experimental_data
from model_training.experiment.network import (
    KELVIN_SCALE,
    ExperimentConfig,
    TrainedExperimentNetwork,
    _temperature_loss,
    build_experiment_network,
    interval_margin,
    served_experiment_model,
    widened,
)
from model_training.members import training_dataset
from model_training.mp.rule_labels import can_carry_moment
from model_training.network import derived_features, feature_quantiles
from model_training.split import load_split, save_split, split_data
from tests.conftest import make_settings
from tests.experiment_fixture import (
    BAD_ROWS,
    CONFLICTING_FORMULA,
    MAJORITY_FORMULA,
    write_experimental_snapshot,
)
from tests.snapshot_fixture import write_snapshot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    """One `experiment` run, as a user would type it, beside a copy of the fixture MP model."""
    root = tmp_path_factory.mktemp("experiment")
    snapshot = write_experimental_snapshot(root / "experimental.csv", bad_rows=True)
    mp_snapshot = write_snapshot(root / "mp.csv", rows_per_class=30)
    served = shutil.copytree(model_dir, root / "model")
    run_dir = root / "run"
    code = main(
        [
            "experiment",
            "--data", str(snapshot),
            "--mp-data", str(mp_snapshot),
            "--model-dir", str(served),
            "--run-dir", str(run_dir),
            "--epochs", "20",
            "--ensemble-size", "2",
            "--version", "exp-test-1",
            "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    return {"snapshot": snapshot, "model_dir": served, "run_dir": run_dir}


def test_cleaning_counts_every_drop_and_merges_repeated_reports(tmp_path: Path) -> None:
    data = load_experimental_data(
        write_experimental_snapshot(tmp_path / "e.csv", formulas_per_class=20, bad_rows=True)
    )
    dropped = data.report.dropped
    for _, reason in BAD_ROWS:
        assert dropped[reason] == 1, reason
    assert dropped["conflicting_ordering"] == 2  # both reports of the conflicting composition
    assert dropped["minority_ordering_report"] == 1
    rows = data.rows.set_index("reduced_formula")
    assert parse_formula(CONFLICTING_FORMULA)[0] not in rows.index
    majority = rows.loc[parse_formula(MAJORITY_FORMULA)[0]]
    assert (majority["ordering"], majority["temperature_kind"]) == ("FM", "curie")
    assert majority["temperature_K"] == pytest.approx(410.0)  # the median, not the mean
    assert majority["n_reports"] == 3
    assert rows.index.is_unique  # one record per composition
    assert data.report.rows_read == data.report.rows_kept + sum(dropped.values())
    # The density slot holds the placeholder: the sources have no density.
    assert np.all(data.features[:, DENSITY_INDEX] == 1.0)


def test_a_malformed_snapshot_is_refused_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("record_id,formula,ordering\ne1,Fe,FM\n", encoding="utf-8")
    with pytest.raises(SnapshotError, match=r"lacks column.*temperature_kind.*temperature_K"):
        load_experimental_data(bad)
    assert main(["experiment", "--data", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    assert "lacks column" in capsys.readouterr().err


def test_the_split_keeps_formulas_apart_and_is_saved_by_record_id(tmp_path: Path) -> None:
    data = load_experimental_data(write_experimental_snapshot(tmp_path / "e.csv"))
    split = split_data(data, seed=3)
    parts = {name: set(data.rows["reduced_formula"].iloc[getattr(split, name)]) for name in
             ("train", "validation", "test")}  # fmt: skip
    assert not parts["train"] & parts["test"]
    assert not parts["train"] & parts["validation"]
    assert not parts["validation"] & parts["test"]
    path = save_split(split, data, tmp_path / "split.csv")
    again = load_split(path, data)
    assert np.array_equal(again.test, split.test)
    assert set(path.read_text().splitlines()[1].split(",")[0]) <= set("x0123456789")


def test_the_run_exports_a_checked_head_with_its_card(trained: dict[str, Path]) -> None:
    head_dir = trained["model_dir"] / EXPERIMENT_DIRNAME
    card = read_metadata(head_dir, ExperimentMetadata)
    assert card.model_version == "exp-test-1"
    metrics = card.metrics
    assert set(metrics["baselines"]) == {"majority", "lightgbm", "mp_head"}
    # Separable chemistries: far better than the majority class, and hot FM against cold AFM.
    assert metrics["ordering"]["accuracy"] > 0.9
    assert metrics["temperature"]["mae"] < metrics["baselines"]["majority"]["temperature_mae"]
    assert set(metrics["temperature"]["by_kind"]) == {"curie", "neel"}
    assert 0.0 <= metrics["temperature"]["interval_coverage"] <= 1.0
    assert card.data_card["dropped"]["conflicting_ordering"] == 2
    assert any("NEMAD" in source for source in card.sources)
    text = (head_dir / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    for expected in ("How the service combines it", "Targets", "Where it fails",
                     "Textbook magnets", "lightgbm", "mp_head", "T_N (AFM)", "Itani"):  # fmt: skip
        assert expected in text
    for plot in (PARITY_PLOT, CONFUSION_PLOT):
        assert (head_dir / plot).read_bytes().startswith(PNG_SIGNATURE)
    run = json.loads((trained["run_dir"] / "metrics.json").read_text())
    assert run["well_known"][0]["formula"] == "Fe"


def test_the_head_never_reads_the_density_and_litert_reproduces_it(
    trained: dict[str, Path],
) -> None:
    predictor = Predictor.load(trained["model_dir"], ModelRuntime.LITERT)
    reference = Predictor.load(trained["model_dir"], ModelRuntime.TENSORFLOW)
    assert predictor.experiment_version == "exp-test-1"
    features = np.stack([featurize("Fe3Al", 7.0), featurize("MnF2", 3.9)])
    denser = features.copy()
    denser[:, DENSITY_INDEX] = 20.0
    head, tf_head = predictor.experiment, reference.experiment
    assert head is not None
    assert tf_head is not None
    np.testing.assert_allclose(head.outputs(features), head.outputs(denser))
    np.testing.assert_allclose(head.outputs(features), tf_head.outputs(features), rtol=1e-4)


def test_the_service_answers_what_experiment_would_find(trained: dict[str, Path]) -> None:
    with TestClient(create_app(make_settings(trained["model_dir"]))) as client:
        health = client.get("/health").json()
        assert health["experiment_model_version"] == "exp-test-1"
        body = client.post("/predict", json={"formula": "MnF2", "density": 3.9}).json()
        assert set(body) >= {"prediction", "probabilities", "experiment"}
        experiment = body["experiment"]
        assert set(experiment["probabilities"]) == {"FM", "AFM", "NM"}
        assert sum(experiment["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        # P(NM) is the Materials Project head's; the rest splits by P(FM | magnetic).
        assert experiment["probabilities"]["NM"] == pytest.approx(body["probabilities"]["NM"])
        magnetic = 1 - experiment["probabilities"]["NM"]
        assert experiment["probabilities"]["FM"] == pytest.approx(
            magnetic * experiment["p_fm_if_magnetic"], rel=1e-5
        )
        assert experiment["prediction"] == max(
            experiment["probabilities"], key=experiment["probabilities"].get
        )
        temperature = experiment["ordering_temperature"]
        assert temperature["kind"] == ("curie" if experiment["p_fm_if_magnetic"] >= 0.5 else "neel")
        assert 0 < temperature["low_kelvin"] <= temperature["kelvin"] <= temperature["high_kelvin"]
        assert temperature["interval"] == pytest.approx(0.8)
        # The fixture's AFM chemistry orders cold, its FM chemistry hot.
        hot = client.post("/predict", json={"formula": "Fe3Al", "density": 6.5}).json()
        assert hot["experiment"]["p_fm_if_magnetic"] > experiment["p_fm_if_magnetic"]
        assert hot["experiment"]["ordering_temperature"]["kelvin"] > temperature["kelvin"]
        batch = client.post(
            "/predict/batch",
            json={"items": [{"formula": "MnF2", "density": 3.9}, {"formula": "Qq", "density": 1}]},
        ).json()
        assert batch["results"][0]["experiment"] == experiment
        assert "experiment" not in batch["results"][1]
        model = client.get("/model").json()
        assert model["experiment"]["model_version"] == "exp-test-1"
        assert model["model_version"] == body["model_version"]
        card = client.get("/model/card").text
        assert "## magorder experiment head" in card


def test_lanthanides_whose_4f_mp_freezes_are_exactly_those_mp_cannot_see() -> None:
    lanthanides = {Element.from_Z(z).symbol for z in range(58, 71)}  # Ce to Yb: 4f1 to 4f13
    frozen_by_mp = {symbol for symbol in lanthanides if not can_carry_moment(symbol)}
    assert frozen_by_mp == FROZEN_4F_ELEMENTS


def test_mp_s_nm_verdict_is_not_used_for_frozen_4f_compounds(trained: dict[str, Path]) -> None:
    features = np.stack([featurize("NdF3", 6.5), featurize("MnF2", 3.9)])
    p_nm = np.asarray([0.9, 0.9], np.float32)
    assert experimental_p_nm(p_nm, features).tolist() == pytest.approx([0.0, 0.9])
    with TestClient(create_app(make_settings(trained["model_dir"]))) as client:
        body = client.post("/predict", json={"formula": "NdMn2", "density": 7.0}).json()
    experiment = body["experiment"]
    assert experiment["probabilities"]["NM"] == 0.0
    assert experiment["prediction"] in {"FM", "AFM"}
    assert any("Nd" in w and "freeze" in w for w in experiment["warnings"])


def test_a_model_without_a_head_answers_experiment_null(client: TestClient) -> None:
    body = client.post("/predict", json={"formula": "NiO", "density": 6.67}).json()
    assert body["experiment"] is None
    assert client.get("/health").json()["experiment_model_version"] is None
    assert client.get("/model").json()["experiment"] is None


def test_an_edited_head_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    edited = shutil.copytree(trained["model_dir"], tmp_path / "edited")
    card_path = edited / EXPERIMENT_DIRNAME / METADATA_FILENAME
    card = json.loads(card_path.read_text())
    card["output_columns"] = list(reversed(card["output_columns"]))
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"experiment head .*metadata.json does not match"):
        Predictor.load(edited)
    write_manifest(card_path.parent)  # sealed again: the card is still checked
    with pytest.raises(ModelLoadError, match=r"experiment head .* outputs"):
        Predictor.load(edited)
    variables = next((edited / EXPERIMENT_DIRNAME / "saved_model" / "variables").glob("*.data*"))
    card["output_columns"] = list(reversed(card["output_columns"]))
    card_path.write_text(json.dumps(card))
    write_manifest(card_path.parent)
    variables.write_bytes(variables.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelLoadError, match=r"variables\.data\S* does not match its manifest"):
        Predictor.load(edited)


def test_the_command_line_writes_the_experiment_columns(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("formula,density\nMnF2,3.9\nFe3Al,6.5\n", encoding="utf-8")
    status = cli_main(["predict", str(source), "--model-dir", str(trained["model_dir"])])
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    for row in rows:
        assert row["exp_prediction"] in {"FM", "AFM", "NM"}
        total = sum(float(row[f"exp_p_{c}"]) for c in ("FM", "AFM", "NM"))
        assert total == pytest.approx(1.0, abs=1e-5)
        assert row["exp_temperature_kind"] in {"curie", "neel"}
        low, mid, high = (float(row[f"exp_temperature_{k}"]) for k in ("low_K", "K", "high_K"))
        assert 0 < low <= mid <= high


def test_exporting_the_mp_head_again_keeps_the_experiment_head(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from model_training.export import export_model
    from model_training.mp.config import ModelConfig
    from model_training.mp.network import build_model

    target = shutil.copytree(trained["model_dir"], tmp_path / "again")
    metadata = read_metadata(target)
    export_model(build_model(ModelConfig(hidden_units=(8,), seed=2)), metadata, target)
    assert Predictor.load(target).experiment_version == "exp-test-1"


def test_the_experiment_network_reads_ranks_of_density_free_features_only() -> None:
    rows = np.stack([featurize(formula, 5.0) for formula in ("Fe3Al", "MnF2", "NiO", "Gd")])
    derived = derived_features(rows, with_density=False)
    network = build_experiment_network(
        ExperimentConfig(quantile_bins=4),
        feature_mean=derived.mean(axis=0),
        feature_variance=derived.var(axis=0),
        feature_quantiles=feature_quantiles(derived, 4),
    )
    ranks = network.get_layer("ranks")
    assert ranks.output.shape[-1] == derived.shape[1]
    denser = rows.copy()
    denser[:, DENSITY_INDEX] = 20.0
    answers, denser_answers = network(rows), network(denser)
    for name in ("ordering", "log_temperature"):
        np.testing.assert_array_equal(np.asarray(answers[name]), np.asarray(denser_answers[name]))


def test_the_temperature_pull_weighs_the_teacher_against_the_measured_temperature() -> None:
    quantiles = (0.1, 0.5, 0.9)
    predicted = np.log(np.asarray([[90.0, 100.0, 110.0]], np.float32))
    measured_only = np.log(np.asarray([[100.0, 300.0]], np.float32))
    teacher_only = np.log(np.asarray([[300.0, 100.0]], np.float32))
    labels_loss, pulled_loss = (_temperature_loss(quantiles, d, 0.0) for d in (0.0, 1.0))
    # Without the pull only the measured column counts; with the whole weight on it, only the
    # teacher's: each loss is then lower where its own column matches the median.
    assert float(labels_loss(measured_only, predicted)[0]) < float(
        labels_loss(teacher_only, predicted)[0]
    )
    assert float(pulled_loss(teacher_only, predicted)[0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="temperature_distillation"):
        ExperimentConfig(temperature_distillation=1.5)


def test_the_kelvin_term_weighs_a_miss_by_its_kelvin_not_its_ratio() -> None:
    quantiles = (0.1, 0.5, 0.9)
    # Each median is 10 % below the measured temperature, and each interval as wide.
    hot = (np.log(np.asarray([[1000.0, 1000.0]], np.float32)), np.log([[800.0, 900.0, 1000.0]]))
    cold = (np.log(np.asarray([[100.0, 100.0]], np.float32)), np.log([[80.0, 90.0, 100.0]]))

    def both(kelvin_weight: float) -> tuple[float, float]:
        loss = _temperature_loss(quantiles, 0.0, kelvin_weight)
        hot_loss, cold_loss = (float(loss(t, np.asarray(p, np.float32))[0]) for t, p in (hot, cold))
        return hot_loss, cold_loss

    hot_ln, cold_ln = both(0.0)
    assert hot_ln == pytest.approx(cold_ln, rel=1e-5)  # ln T alone: the same ratio, the same loss
    hot_k, cold_k = both(1.0)
    assert hot_k - hot_ln == pytest.approx(100.0 / KELVIN_SCALE, rel=1e-4)
    assert cold_k - cold_ln == pytest.approx(10.0 / KELVIN_SCALE, rel=1e-4)
    with pytest.raises(ValueError, match="kelvin_weight"):
        ExperimentConfig(kelvin_weight=-1.0)


@pytest.mark.parametrize(("patience", "epochs_run"), [(2, 3), (None, 8)])
def test_without_a_patience_a_member_runs_every_epoch_asked_for(
    patience: int | None, epochs_run: int
) -> None:
    import keras

    from model_training.members import fit_on_validation_loss

    # A learning rate of 0 never lowers the validation loss: any patience stops the fit early.
    config = replace(ExperimentConfig(), epochs=8, patience=patience, warmup_epochs=0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    rows = np.ones((16, 3), np.float32), np.zeros((16, 1), np.float32)
    best, run = fit_on_validation_loss(
        model, training_dataset(*rows, batch_size=8, shuffle_seed=0), rows, config, verbose=0
    )
    assert (best, run) == (1, epochs_run)
    with pytest.raises(ValueError, match="patience"):
        ExperimentConfig(patience=0)


def test_the_interval_margin_makes_the_calibration_rows_covered_as_asked() -> None:
    rng = np.random.default_rng(0)
    measured = rng.normal(5.0, 1.0, 2000).astype(np.float32)
    centre = measured + rng.normal(0.0, 0.5, 2000).astype(np.float32)
    narrow = np.stack([centre - 0.1, centre, centre + 0.1], axis=1)
    wide = np.stack([centre - 3.0, centre, centre + 3.0], axis=1)

    def coverage(quantiles: np.ndarray) -> float:
        return float(((quantiles[:, 0] <= measured) & (measured <= quantiles[:, 2])).mean())

    assert coverage(narrow) < 0.3
    assert coverage(wide) == 1.0
    for quantiles in (narrow, wide):
        margin = interval_margin(quantiles, measured, 0.8)
        assert 0.8 <= coverage(np.asarray(widened(quantiles, margin))) <= 0.81
    assert interval_margin(wide, measured, 0.8) < 0.0 < interval_margin(narrow, measured, 0.8)
    # Narrowed past the median, the ends stop at it.
    np.testing.assert_array_equal(
        np.asarray(widened(narrow, -1.0)), np.repeat(centre[:, None], 3, axis=1)
    )


def test_the_served_head_widens_its_interval_as_the_evaluation_does() -> None:
    config = ExperimentConfig(hidden_units=(8,), element_embedding=4, ensemble_size=1)
    network = TrainedExperimentNetwork(
        model=build_experiment_network(config),
        config=config,
        best_epochs=(1,),
        epochs_run=(1,),
        seconds=0.0,
        strategy="test",
    )
    rows = np.stack([featurize(formula, 5.0) for formula in ("Fe3Al", "MnF2", "NiO", "Gd")])
    _, log_t = network.outputs(rows)
    served = np.asarray(served_experiment_model(network, 1.0, 0.25)(rows))
    np.testing.assert_allclose(served[:, 1:], np.exp(np.asarray(widened(log_t, 0.25))), rtol=1e-5)
    assert (served[:, 1] <= served[:, 2]).all()
    assert (served[:, 2] <= served[:, 3]).all()
