"""Loading exported models, refusing bad ones, and predicting."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.config import DEFAULT_MODEL_DIR
from app.core.errors import ModelLoadError
from app.core.features import FEATURE_LAYOUT_VERSION, N_FEATURES, parse_compound
from app.core.model_card import (
    METADATA_FILENAME,
    SAVED_MODEL_DIRNAME,
    MagneticOrdering,
    hash_directory,
)
from app.core.predictor import Predictor
from tests.conftest import FIXTURE_MODEL_VERSION


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.load(model_dir)


def test_loaded_model_gives_a_distribution_over_the_four_classes(predictor: Predictor) -> None:
    assert predictor.metadata.model_version == FIXTURE_MODEL_VERSION
    probabilities = predictor.predict_proba(
        np.random.default_rng(0).random((5, N_FEATURES), dtype=np.float32)
    )
    assert probabilities.shape == (5, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    (prediction,) = predictor.predict([parse_compound("Fe2O3", 5.24)])
    assert set(prediction.probabilities) == set(MagneticOrdering)
    assert prediction.ordering == max(prediction.probabilities, key=prediction.probabilities.get)  # type: ignore[arg-type]


def test_a_compound_gets_the_same_answer_alone_and_in_a_batch(predictor: Predictor) -> None:
    compounds = [parse_compound(f, d) for f, d in [("NaCl", 2.2), ("Fe2O3", 5.2), ("NiO", 6.7)]]
    together = predictor.predict(compounds)
    for compound, batched in zip(compounds, together, strict=True):
        (alone,) = predictor.predict([compound])
        assert alone.probabilities == pytest.approx(batched.probabilities, abs=1e-6)


def test_predicting_nothing_calls_no_model(predictor: Predictor) -> None:
    assert predictor.predict([]) == []


@pytest.mark.parametrize(
    ("formula", "density", "expected"),
    [
        ("Fe2O3", 5.2, []),
        ("Gd2O3", 7.4, ["element(s) Gd do not occur in the training data"]),
        ("Fe2O3", 12.0, ["density 12 g/cm³ lies outside the training range [1, 10] g/cm³"]),
        ("Ba0.5Sr0.5TiO3", 5.5, ["fractional (disordered) composition"]),
    ],
)
def test_warnings_say_when_to_distrust_an_answer(
    predictor: Predictor, formula: str, density: float, expected: list[str]
) -> None:
    warnings = predictor.warnings_for(parse_compound(formula, density))
    assert len(warnings) == len(expected)
    for warning, fragment in zip(warnings, expected, strict=True):
        assert fragment in warning


def test_placeholder_is_marked_untrained_in_every_answer(placeholder_dir: Path) -> None:
    placeholder = Predictor.load(placeholder_dir)
    assert placeholder.metadata.trained is False
    (prediction,) = placeholder.predict([parse_compound("Fe2O3", 5.24)])
    assert prediction.warnings == (
        "model 0.0.0+untrained is an untrained placeholder: its probabilities carry no information",
    )


def test_committed_model_loads_and_matches_the_feature_layout() -> None:
    committed = Predictor.load(DEFAULT_MODEL_DIR)
    assert committed.metadata.feature_layout_version == FEATURE_LAYOUT_VERSION
    (prediction,) = committed.predict([parse_compound("Fe2O3", 5.24)])
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def _edit_metadata(**changes: object) -> Callable[[Path], None]:
    def edit(model_dir: Path) -> None:
        path = model_dir / METADATA_FILENAME
        card = json.loads(path.read_text())
        card.update(changes)
        path.write_text(json.dumps(card))

    return edit


def _remove(relative: str) -> Callable[[Path], None]:
    def remove(model_dir: Path) -> None:
        target = model_dir / relative
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    return remove


def _overwrite(relative: str, content: bytes) -> Callable[[Path], None]:
    def overwrite(model_dir: Path) -> None:
        (model_dir / relative).write_bytes(content)

    return overwrite


def _resealed(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """Damage the SavedModel, then record its new checksum, as a careless re-export would."""

    def damage_and_reseal(model_dir: Path) -> None:
        damage(model_dir)
        checksum = hash_directory(model_dir / SAVED_MODEL_DIRNAME)
        _edit_metadata(saved_model_sha256=checksum)(model_dir)

    return damage_and_reseal


PB = f"{SAVED_MODEL_DIRNAME}/saved_model.pb"
VARIABLES = f"{SAVED_MODEL_DIRNAME}/variables"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_remove(""), "does not exist"),
        (_remove(METADATA_FILENAME), "metadata.json is missing"),
        (_overwrite(METADATA_FILENAME, b"{not json"), "is not a valid model card"),
        (_edit_metadata(model_version=""), "is not a valid model card"),
        (_edit_metadata(feature_layout_version="old:v0"), "trained on feature layout 'old:v0'"),
        (_edit_metadata(n_features=120), "expects 120 features"),
        (_edit_metadata(classes=["FM", "NM", "AFM"]), "are not exactly"),
        (_edit_metadata(classes=["NM", "FM", "FiM", "AFM"]), "in that order"),
        (_edit_metadata(classes=["FM", "NM", "FiM", "XYZ"]), "is not a valid model card"),
        (_remove(SAVED_MODEL_DIRNAME), "SavedModel directory"),
        (_edit_metadata(saved_model_sha256=None), "has no saved_model_sha256"),
        (_overwrite(PB, b"garbage"), "does not match its model card"),
        (_remove(VARIABLES), "does not match its model card"),
        (_overwrite(f"{SAVED_MODEL_DIRNAME}/extra.txt", b"x"), "does not match its model card"),
        (_resealed(_overwrite(PB, b"garbage")), "cannot load SavedModel"),
        (_resealed(_remove(VARIABLES)), "cannot load SavedModel"),
    ],
)
def test_missing_corrupt_or_mismatched_models_are_refused(
    model_dir: Path, tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    damage(broken)
    with pytest.raises(ModelLoadError) as caught:
        Predictor.load(broken)
    assert message in str(caught.value)
