"""Loading exported models, refusing bad ones, and predicting."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from app.config import DEFAULT_MODEL_DIR
from app.core.errors import ModelLoadError
from app.core.features import FEATURE_LAYOUT_VERSION, N_FEATURES, parse_compound
from app.core.model_card import (
    DENSITY_DIRNAME,
    EXPERIMENT_DIRNAME,
    HEAD_DIRNAMES,
    METADATA_FILENAME,
    SAVED_MODEL_DIRNAME,
    DensityMetadata,
    ExperimentMetadata,
    MagneticOrdering,
    hash_directory,
)
from app.core.model_manifest import (
    MANIFEST_FILENAME,
    file_digests,
    read_manifest,
    verify_manifest,
    write_manifest,
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


def _seal(model_dir: Path) -> None:
    write_manifest(model_dir, HEAD_DIRNAMES)


def _sealed(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """Damage a model, then seal it again: the checks behind the manifest must still hold."""

    def damage_and_seal(model_dir: Path) -> None:
        damage(model_dir)
        _seal(model_dir)

    return damage_and_seal


def _tampered_metadata(**changes: object) -> Callable[[Path], None]:
    """Edit the card in place, leaving its manifest as exported."""

    def edit(model_dir: Path) -> None:
        path = model_dir / METADATA_FILENAME
        card = json.loads(path.read_text())
        card.update(changes)
        path.write_text(json.dumps(card))

    return edit


def _edit_metadata(**changes: object) -> Callable[[Path], None]:
    """Edit the card and seal the directory again, as a careless re-export would."""
    return _sealed(_tampered_metadata(**changes))


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


def _split(relative: str) -> Callable[[Path], None]:
    """Move the second half of a file into a new file beside it.

    The old checksum, over names and contents run together, could not tell them apart.
    """

    def split(model_dir: Path) -> None:
        path = model_dir / relative
        content = path.read_bytes()
        half = len(content) // 2
        path.write_bytes(content[:half])
        path.with_name(path.name + "2").write_bytes(content[half:])

    return split


def _symlink(relative: str, target: str) -> Callable[[Path], None]:
    def link(model_dir: Path) -> None:
        (model_dir / relative).symlink_to(target)

    return link


def _fifo(relative: str) -> Callable[[Path], None]:
    def fifo(model_dir: Path) -> None:
        os.mkfifo(model_dir / relative)

    return fifo


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
        (_remove(MANIFEST_FILENAME), "SHA256SUMS is missing"),
        (_overwrite(MANIFEST_FILENAME, b"not a manifest\n"), "line 1 is not '<sha256>  <path>'"),
        (_remove(METADATA_FILENAME), "metadata.json is missing (listed in"),
        (
            _tampered_metadata(density_range=[0.5, 50.0]),
            "metadata.json does not match its manifest",
        ),
        (_tampered_metadata(model_version="9.9.9"), "metadata.json does not match its manifest"),
        (_sealed(_overwrite(METADATA_FILENAME, b"{not json")), "is not a valid model card"),
        (_edit_metadata(model_version=""), "is not a valid model card"),
        (_edit_metadata(density_range=[10.0, 1.0]), "density_range [10.0, 1.0] is not 0 < low"),
        (_edit_metadata(density_range=[0.0, 1.0]), "density_range"),
        (_edit_metadata(feature_layout_version="old:v0"), "trained on feature layout 'old:v0'"),
        (_edit_metadata(n_features=120), "expects 120 features"),
        (_edit_metadata(classes=["FM", "NM", "AFM"]), "are not exactly"),
        (_edit_metadata(classes=["NM", "FM", "FiM", "AFM"]), "in that order"),
        (_edit_metadata(classes=["FM", "NM", "FiM", "XYZ"]), "is not a valid model card"),
        (_remove(SAVED_MODEL_DIRNAME), "saved_model/fingerprint.pb is missing (listed in"),
        (_sealed(_remove(SAVED_MODEL_DIRNAME)), "SavedModel directory"),
        (_edit_metadata(saved_model_sha256=None), "has no saved_model_sha256"),
        (_overwrite(PB, b"garbage"), "saved_model.pb does not match its manifest"),
        (_remove(VARIABLES), "is missing (listed in"),
        (_overwrite(f"{SAVED_MODEL_DIRNAME}/extra.txt", b"x"), "extra.txt is not listed in"),
        (_overwrite("notes.png", b"x"), "notes.png is not listed in"),
        (_split(PB), "saved_model.pb2 is not listed in"),
        (_sealed(_split(PB)), "does not match its model card"),
        (_symlink("leak.png", "/etc/passwd"), "leak.png is a symbolic link"),
        (_symlink(f"{VARIABLES}/leak", "/etc/passwd"), "variables/leak is a symbolic link"),
        (_symlink("experiment", SAVED_MODEL_DIRNAME), "experiment is a symbolic link"),
        (_fifo("pipe.png"), "pipe.png is not a regular file"),
        (_overwrite(".hidden", b"x"), "'.hidden' in"),
        (_overwrite("two words.png", b"x"), "is not a file name a model directory holds"),
        (_sealed(_overwrite(PB, b"garbage")), "does not match its model card"),
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


def test_an_export_seals_every_file_of_its_directory(model_dir: Path) -> None:
    listed = read_manifest(model_dir)
    assert METADATA_FILENAME in listed
    assert f"{SAVED_MODEL_DIRNAME}/saved_model.pb" in listed
    assert listed == file_digests(model_dir, HEAD_DIRNAMES)
    # The card's checksum is the digest of the SavedModel's lines of the manifest.
    card = json.loads((model_dir / METADATA_FILENAME).read_text())
    assert card["saved_model_sha256"] == hash_directory(model_dir / SAVED_MODEL_DIRNAME)


def test_the_committed_model_and_its_heads_are_sealed() -> None:
    verify_manifest(DEFAULT_MODEL_DIR, HEAD_DIRNAMES)
    for head in HEAD_DIRNAMES:
        verify_manifest(DEFAULT_MODEL_DIR / head)


def test_a_checksum_tells_a_split_file_from_its_concatenation(tmp_path: Path) -> None:
    # The old checksum hashed name + NUL + content + NUL per file, so one file holding
    # "X NUL b NUL Y" hashed like file a = "X" beside file b = "Y".
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir()
    split.mkdir()
    (whole / "a").write_bytes(b"X\0b\0Y")
    (split / "a").write_bytes(b"X")
    (split / "b").write_bytes(b"Y")
    assert hash_directory(whole) != hash_directory(split)


def test_an_edited_confidence_rule_of_the_committed_model_is_refused(tmp_path: Path) -> None:
    # margin_below 0 silently removed every "unsure answer" warning.
    edited = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model")
    _tampered_metadata(
        confidence={
            **json.loads((edited / METADATA_FILENAME).read_text())["confidence"],
            "margin_below": 0.0,
        }
    )(edited)
    with pytest.raises(ModelLoadError, match=r"metadata\.json does not match its manifest"):
        Predictor.load(edited)


@pytest.mark.parametrize("head", HEAD_DIRNAMES)
def test_an_edited_head_card_of_the_committed_model_is_refused(tmp_path: Path, head: str) -> None:
    edited = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model")
    card = edited / head / METADATA_FILENAME
    card.write_text(card.read_text().replace('"model_version": "', '"model_version": "x', 1))
    with pytest.raises(ModelLoadError, match=r"does not match its manifest"):
        verify_manifest(edited / head)


@pytest.mark.parametrize(
    "quantiles", [(0.9, 0.5, 0.1), (0.1, 0.1, 0.9), (0.0, 0.5, 0.9), (0.1, 0.5, 1.5)]
)
def test_an_experiment_card_with_nonsense_quantiles_is_invalid(
    quantiles: tuple[float, float, float],
) -> None:
    # Reversed quantiles made the answers' interval coverage negative (-0.8).
    card = json.loads((DEFAULT_MODEL_DIR / EXPERIMENT_DIRNAME / METADATA_FILENAME).read_text())
    card["temperature_quantiles"] = quantiles
    with pytest.raises(ValidationError, match="temperature_quantiles"):
        ExperimentMetadata.model_validate(card)


def test_a_card_with_a_non_finite_number_is_invalid() -> None:
    card = json.loads((DEFAULT_MODEL_DIR / DENSITY_DIRNAME / METADATA_FILENAME).read_text())
    card["test_mae"] = float("nan")
    with pytest.raises(ValidationError, match="test_mae"):
        DensityMetadata.model_validate(card)
