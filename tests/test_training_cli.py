"""The trainer's command line and its export round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.features import featurize
from app.core.model_card import read_metadata
from app.core.predictor import Predictor
from model_training.__main__ import main
from model_training.mp.config import ModelConfig


def test_placeholder_command_exports_a_loadable_untrained_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "model"
    assert main(["placeholder", "--output", str(target), "--seed", "3"]) == 0
    assert f"exported untrained placeholder model to {target}" in capsys.readouterr().out
    card = read_metadata(target)
    assert card.trained is False
    assert card.training_config["model"]["seed"] == 3
    probabilities = Predictor.load(target).predict_proba(featurize("Fe2O3", 5.24)[None, :])
    assert probabilities.shape == (1, 4)


def test_export_replaces_an_existing_model_and_leaves_no_staging_dirs(tmp_path: Path) -> None:
    target = tmp_path / "model"
    main(["placeholder", "--output", str(target), "--seed", "1"])
    main(["placeholder", "--output", str(target), "--seed", "2"])
    assert read_metadata(target).training_config["model"]["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_units": ()}, "hidden_units"),
        ({"hidden_units": (8, 0)}, "hidden_units"),
        ({"dropout": 1.0}, "dropout"),
        ({"ensemble_size": 0}, "ensemble_size"),
        ({"tree_sets": -1}, "tree_sets"),
        ({"tree_depth": 17}, "tree_depth"),
        ({"tree_learning_rate": 0.0}, "tree_learning_rate"),
    ],
)
def test_model_config_refuses_nonsense(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**changes)  # type: ignore[arg-type]
