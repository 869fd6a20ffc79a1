"""Snapshot → train → evaluate → export → service, end to end on a fixture the tests write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.features import N_FEATURES, featurize, parse_compound
from app.core.model_card import (
    MODEL_CARD_FILENAME,
    MagneticOrdering,
    read_metadata,
    write_metadata,
)
from app.core.model_runtime import ModelRuntime
from app.core.predictor import Predictor
from app.main import create_app
from model_training.__main__ import main
from model_training.data import file_sha256
from model_training.members import training_dataset
from model_training.mp.card import CONFUSION_PLOT, F1_PLOT, RELIABILITY_PLOT
from model_training.network import (
    QuantileRanks,
    derived_feature_names,
    derived_features,
    feature_quantiles,
)
from model_training.strategy import StrategyChoice, StrategyUnavailableError, choose_strategy
from tests.conftest import make_settings
from tests.snapshot_fixture import write_snapshot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One `evaluate` run on a synthetic snapshot, as a user would type it."""
    root = tmp_path_factory.mktemp("evaluate")
    snapshot = write_snapshot(root / "snapshot.csv", rows_per_class=60, bad_rows=True)
    model_dir, run_dir = root / "model", root / "run"
    code = main(
        [
            "evaluate",
            "--data", str(snapshot),
            "--model-dir", str(model_dir),
            "--run-dir", str(run_dir),
            "--epochs", "25",
            "--seed-epochs", "2",
            "--ensemble-size", "2",
            "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    return {"snapshot": snapshot, "model_dir": model_dir, "run_dir": run_dir}


def test_evaluate_exports_a_trained_model_with_its_card(evaluated: dict[str, Path]) -> None:
    card = read_metadata(evaluated["model_dir"])
    assert card.trained is True
    assert card.data_snapshot_sha256 == file_sha256(evaluated["snapshot"])
    assert card.data_card["dropped"]["unparsable_formula"] == 1
    metrics = card.metrics
    assert set(metrics["per_class"]) == {"FM", "NM", "FiM", "AFM"}
    assert set(metrics["baselines"]) == {"majority", "lightgbm", "seed"}
    assert 0.0 <= metrics["calibration"]["ece_after_scaling"] <= 1.0
    # The fixture's chemistries are separable: a trained model must do far better than chance
    # and than the majority class.
    assert metrics["macro_f1"] > 0.8
    assert metrics["macro_f1"] > metrics["baselines"]["majority"]["macro_f1"] + 0.3
    assert card.training_config["temperature"] > 0
    assert {"Fe", "Mn", "O", "Na"} <= set(card.elements_seen)
    # The served ensemble's members (the two networks asked for) and its fifth column.
    assert card.confidence is not None
    assert card.confidence.members == ("magorder_seed0", "magorder_seed1")
    assert card.n_outputs == 5
    magnetic = metrics["magnetic_vs_nm"]["snapshot"]
    assert 0.8 < magnetic["f1"] <= 1.0
    # The three tree sets compiled beside the networks, and the share chosen for them.
    trees = card.training_config["trees"]
    assert trees["seeds"] == [0, 1, 2]
    assert trees["depth"] == 10
    assert trees["trees"] == 4 * sum(trees["rounds"]) > 0
    assert 0.0 <= card.training_config["network_share"] <= 1.0
    assert set(metrics["networks_alone"]) == {"macro_f1", "accuracy"}


def test_the_card_describes_the_exported_graph(evaluated: dict[str, Path]) -> None:
    """The card's figures come from the same blend of networks and trees the service runs."""
    metrics = json.loads((evaluated["run_dir"] / "metrics.json").read_text())
    well_known = metrics["well_known"]
    predictor = Predictor.load(evaluated["model_dir"], ModelRuntime.TENSORFLOW)
    answers = predictor.predict([parse_compound(w["formula"], w["density"]) for w in well_known])
    for row, answer in zip(well_known, answers, strict=True):
        predicted = MagneticOrdering(row["predicted"])
        assert answer.ordering is predicted, row["formula"]
        assert answer.probabilities[predicted] == pytest.approx(row["probability"], abs=2e-3)
        assert answer.probabilities[MagneticOrdering.NM] == pytest.approx(row["p_nm"], abs=2e-3)
        assert answer.member_spread == pytest.approx(row["member_spread"], abs=2e-3)


def test_evaluate_writes_the_model_card_plots_split_and_metrics(
    evaluated: dict[str, Path],
) -> None:
    model_dir, run_dir = evaluated["model_dir"], evaluated["run_dir"]
    text = (model_dir / MODEL_CARD_FILENAME).read_text()
    for expected in ("majority", "lightgbm", "seed", "magorder", "Calibration", "Leakage",
                     "Error analysis", "not experiment", "CaTiO3", "Magnetic or not",
                     "Reading an answer", "Unsure answers", "What the density changes",
                     "member spread", "| test rows |"):  # fmt: skip
        assert expected in text
    for plot in (CONFUSION_PLOT, F1_PLOT, RELIABILITY_PLOT):
        assert (model_dir / plot).read_bytes().startswith(PNG_SIGNATURE)
    split = (run_dir / "split.csv").read_text().splitlines()
    assert split[0] == "record_id,part"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["results"]) == {"majority", "lightgbm", "seed", "networks", "magorder"}
    assert "random" in metrics["metrics"]["leakage_macro_f1"]["magorder"]


def test_the_service_serves_the_exported_model(evaluated: dict[str, Path]) -> None:
    model_dir = evaluated["model_dir"]
    with TestClient(create_app(make_settings(model_dir))) as client:
        health = client.get("/health").json()
        assert health["trained"] is True
        assert health["runtime"] == "litert"  # LiteRT reproduces the exported model
        response = client.post("/predict", json={"formula": "NaCl", "density": 2.5})
        assert response.status_code == 200
        body = response.json()
        assert body["prediction"] == "NM"  # the fixture's NM chemistry
        assert body["warnings"] == []
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert body["magnetic_probability"] == pytest.approx(1 - body["probabilities"]["NM"])
        assert 0.0 <= body["member_spread"] <= 1.0
        assert client.get("/model").json()["metrics"]["macro_f1"] > 0.8
        card = client.get("/model/card")
        assert card.status_code == 200
        assert card.headers["content-type"].startswith("text/markdown")
        assert card.text == (model_dir / MODEL_CARD_FILENAME).read_text()


def test_litert_and_tensorflow_agree_on_the_exported_model(evaluated: dict[str, Path]) -> None:
    model_dir = evaluated["model_dir"]
    rows = np.stack([featurize("Fe2O3", 5.2), featurize("MnF2", 4.0), featurize("Ag", 10.5)])
    litert = Predictor.load(model_dir, ModelRuntime.LITERT).predict_proba(rows)
    tensorflow = Predictor.load(model_dir, ModelRuntime.TENSORFLOW).predict_proba(rows)
    np.testing.assert_allclose(litert, tensorflow, atol=1e-4)
    compounds = [parse_compound("Fe2O3", 5.2), parse_compound("MnF2", 4.0)]
    litert_spread, tensorflow_spread = (
        [p.member_spread for p in Predictor.load(model_dir, runtime).predict(compounds)]
        for runtime in (ModelRuntime.LITERT, ModelRuntime.TENSORFLOW)
    )
    assert None not in litert_spread + tensorflow_spread
    np.testing.assert_allclose(
        np.asarray(litert_spread, float), np.asarray(tensorflow_spread, float), atol=1e-4
    )


def test_the_card_rule_decides_which_answers_carry_an_unsure_warning(
    evaluated: dict[str, Path], tmp_path: Path
) -> None:
    model_dir = shutil.copytree(evaluated["model_dir"], tmp_path / "model")
    card = read_metadata(model_dir)
    assert card.confidence is not None
    strict = card.confidence.model_copy(
        update={"margin_below": 1.0, "spread_above": 0.0, "margin_accuracy": 0.4,
                "spread_accuracy": 0.45}
    )  # fmt: skip
    write_metadata(card.model_copy(update={"confidence": strict}), model_dir)
    # Half FM chemistry, half NM chemistry: no answer is sure of it.
    (answer,) = Predictor.load(model_dir).predict([parse_compound("FeNaO2Cl", 4.2)])
    assert max(answer.probabilities.values()) < 0.999
    unsure = [w for w in answer.warnings if w.startswith("unsure answer")]
    split = [w for w in answer.warnings if w.startswith("the model's members disagree")]
    assert len(unsure) == 1
    assert "right 40% of the time" in unsure[0]
    assert len(split) == int((answer.member_spread or 0.0) > 0.0)
    lenient = card.confidence.model_copy(update={"margin_below": 0.0, "spread_above": None})
    write_metadata(card.model_copy(update={"confidence": lenient}), model_dir)
    (answer,) = Predictor.load(model_dir).predict([parse_compound("FeNaO2Cl", 4.2)])
    assert not [w for w in answer.warnings if "unsure" in w or "disagree" in w]


def test_train_command_exports_one_network(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot.csv", rows_per_class=25)
    output = tmp_path / "model"
    code = main(
        ["train", "--data", str(snapshot), "--output", str(output), "--run-dir",
         str(tmp_path / "run"), "--epochs", "3", "--ensemble-size", "1", "--quiet"]
    )  # fmt: skip
    assert code == 0
    card = read_metadata(output)
    assert card.trained is True
    assert card.training_config["model"]["ensemble_size"] == 1
    assert len(card.training_config["trees"]["seeds"]) == 3  # the magorder head's default
    assert Predictor.load(output).predict_proba(featurize("CaO", 3.3)[None, :]).shape == (1, 4)


def test_train_command_reports_a_missing_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(tmp_path / "absent.csv"), "--quiet"]) == 2
    assert "cannot read snapshot" in capsys.readouterr().err


def test_derived_features_do_not_depend_on_how_the_formula_is_written() -> None:
    raw = np.stack([featurize("Fe2O3", 5.2), featurize("Fe4O6", 5.2), featurize("O3Fe2", 5.2)])
    derived = derived_features(raw)
    assert derived.shape == (3, len(derived_feature_names()))
    names = derived_feature_names()
    # Only the size of the formula unit differs, and Fe4O6 reduces to Fe2O3 anyway.
    np.testing.assert_allclose(derived[0], derived[1], rtol=1e-6)
    np.testing.assert_allclose(derived[0], derived[2], rtol=1e-6)
    volume = derived[0, names.index("volume_per_atom")]
    # Fe2O3: 159.69 g/mol over 5 atoms at 5.2 g/cm3 is 10.2 cubic angstrom per atom.
    assert volume == pytest.approx(159.69 / 5 * 1.66054 / 5.2, rel=1e-3)
    assert np.isfinite(derived).all()


def test_quantile_ranks_follow_the_training_distribution_and_survive_serialisation() -> None:
    rng = np.random.default_rng(0)
    training = np.stack([rng.exponential(size=1000), np.zeros(1000)], axis=1).astype(np.float32)
    training[:100, 1] = 1.0  # a mostly-zero column, as an element fraction is
    layer = QuantileRanks(quantiles=feature_quantiles(training, 16))
    probe = np.asarray([[-1.0, 0.0], [np.median(training[:, 0]), 0.5], [1e3, 2.0]], np.float32)
    ranks = np.asarray(layer(probe))
    np.testing.assert_allclose(ranks[0], [-1.0, -1.0])  # below every training value
    assert ranks[1, 0] == pytest.approx(0.0, abs=0.01)  # the median is the middle rank
    np.testing.assert_allclose(ranks[2], [1.0, 1.0])  # above every training value
    # The zeros fill the first 14 of 16 bins: 0 is ranked below them, 0.5 past them.
    assert ranks[0, 1] == -1.0
    assert ranks[1, 1] == pytest.approx(2 * 14.5 / 16 - 1)
    column = np.sort(training[:, 0])[:, None].repeat(2, axis=1)
    assert np.all(np.diff(np.asarray(layer(column))[:, 0]) >= 0)  # monotone
    restored = QuantileRanks.from_config(layer.get_config())
    np.testing.assert_array_equal(np.asarray(restored(probe)), ranks)
    with pytest.raises(ValueError, match="ascending"):
        QuantileRanks(quantiles=feature_quantiles(training, 16)[::-1])


@pytest.mark.parametrize("as_dict", [False, True], ids=["one target", "a target per output"])
def test_the_training_rows_are_shuffled_across_the_whole_split(as_dict: bool) -> None:
    # The experiment head passes a dict of targets; the shuffle buffer once took len() of it,
    # two rows, and its network saw the rows in nearly their sorted order every epoch.
    n_rows = 2000
    features = np.arange(n_rows, dtype=np.float32)[:, None].repeat(N_FEATURES, axis=1)
    column = np.arange(n_rows, dtype=np.float32)
    targets = {"a": column, "b": column} if as_dict else column
    dataset = training_dataset(features, targets, batch_size=256, shuffle_seed=0)
    epochs = [np.concatenate([np.asarray(rows)[:, 0] for rows, _ in dataset]) for _ in range(2)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), column)  # every row, once
        # A row's place in the epoch says next to nothing of its place in the split.
        assert abs(np.corrcoef(order, column)[0, 1]) < 0.1
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_cpu_strategy_and_unavailable_accelerators() -> None:
    import tensorflow as tf

    assert choose_strategy(StrategyChoice.CPU) is tf.distribute.get_strategy()
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(StrategyUnavailableError, match="no GPU"):
            choose_strategy(StrategyChoice.GPU)
        assert choose_strategy(StrategyChoice.AUTO) is tf.distribute.get_strategy()


@pytest.mark.parametrize(
    ("formula", "oxidation_state", "d_electrons", "closed_shell"),
    [
        ("CaTiO3", 4, 0, 1),  # Ti4+: d0, no moment
        ("ZrO2", 4, 0, 1),
        ("Fe2O3", 3, 5, 0),  # Fe3+: d5
        ("NiO", 2, 8, 0),
        ("FeSO4", 2, 6, 0),  # sulfate: S is +6 beside oxygen
        ("FeS", 2, 6, 0),  # sulfide: S is -2 without oxygen
        ("LiFePO4", 2, 6, 0),
        ("KMnO4", 7, 0, 1),
    ],
)
def test_charge_balance_gives_the_transition_metal_d_count(
    formula: str, oxidation_state: float, d_electrons: float, closed_shell: float
) -> None:
    names = derived_feature_names()
    row = derived_features(featurize(formula, 4.0)[None, :])[0]
    assert row[names.index("tm_oxidation_state")] == pytest.approx(oxidation_state)
    assert row[names.index("tm_d_electrons")] == pytest.approx(d_electrons)
    assert row[names.index("tm_closed_shell")] == closed_shell


def test_compounds_without_transition_metals_have_no_d_count() -> None:
    names = derived_feature_names()
    row = derived_features(featurize("MgAl2O4", 3.6)[None, :])[0]
    assert row[names.index("has_variable_cation")] == 0
    assert row[names.index("tm_d_electrons")] == 0
    assert row[names.index("charge_residual_per_atom")] == pytest.approx(0.0)
