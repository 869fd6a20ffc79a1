"""Executing the SavedModel with LiteRT or TensorFlow, and falling back between them."""

from __future__ import annotations

import logging
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core import model_runtime
from app.core.errors import ModelLoadError
from app.core.features import N_FEATURES
from app.core.model_card import hash_directory, read_metadata, write_metadata
from app.core.model_runtime import LITERT_FILENAME, ModelRuntime, probe_features
from app.core.predictor import Predictor
from app.main import create_app
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def on_litert(model_dir: Path) -> Predictor:
    return Predictor.load(model_dir, ModelRuntime.LITERT)


@pytest.fixture(scope="module")
def on_tensorflow(model_dir: Path) -> Predictor:
    return Predictor.load(model_dir, ModelRuntime.TENSORFLOW)


def test_auto_picks_litert_for_a_model_it_compiles(model_dir: Path) -> None:
    assert Predictor.load(model_dir).runtime is ModelRuntime.LITERT


def test_both_runtimes_give_the_same_probabilities(
    on_litert: Predictor, on_tensorflow: Predictor
) -> None:
    assert on_litert.runtime is ModelRuntime.LITERT
    assert on_tensorflow.runtime is ModelRuntime.TENSORFLOW
    features = probe_features(n_rows=300, seed=7)  # not the rows checked at load time
    for rows in (features[:1], features[:17], features):
        np.testing.assert_allclose(
            on_litert.predict_proba(rows), on_tensorflow.predict_proba(rows), atol=1e-5
        )


def test_litert_is_safe_to_call_from_many_threads(on_litert: Predictor) -> None:
    features = probe_features(n_rows=64, seed=3)
    batches = [features[: 1 + i % 64] for i in range(200)]
    expected = [on_litert.predict_proba(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(on_litert.predict_proba, batches))
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(want, have)


def test_litert_results_are_not_overwritten_by_the_next_call(on_litert: Predictor) -> None:
    first_rows = probe_features(n_rows=4, seed=1)
    first = on_litert.predict_proba(first_rows)
    kept = first.copy()
    on_litert.predict_proba(probe_features(n_rows=4, seed=2))
    np.testing.assert_array_equal(first, kept)


def test_probe_rows_look_like_compounds() -> None:
    features = probe_features()
    assert features.shape == (256, N_FEATURES)
    n_elements = (features[:, :-1] > 0).sum(axis=1)
    assert n_elements.min() >= 1
    assert n_elements.max() <= 6
    assert 0.5 <= features[:, -1].min() <= features[:, -1].max() <= 20.0
    np.testing.assert_array_equal(features, probe_features())


def test_auto_falls_back_to_tensorflow_when_litert_is_missing(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="app.core.model_runtime"):
        predictor = Predictor.load(model_dir, ModelRuntime.AUTO)
    assert predictor.runtime is ModelRuntime.TENSORFLOW
    assert "serving with TensorFlow" in caplog.text
    assert "LiteRT is not installed" in caplog.text


def test_litert_asked_for_but_missing_refuses_to_load(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ModelLoadError, match="runtime 'litert' was asked for, but LiteRT is not"):
        Predictor.load(model_dir, ModelRuntime.LITERT)


def test_a_compiled_model_that_disagrees_is_not_used(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No tolerance is met by any real difference, not even zero: every comparison disagrees.
    monkeypatch.setattr(model_runtime, "LITERT_TOLERANCE", -1.0)
    with caplog.at_level(logging.WARNING, logger="app.core.model_runtime"):
        assert Predictor.load(model_dir, ModelRuntime.AUTO).runtime is ModelRuntime.TENSORFLOW
    assert "LiteRT outputs differ from the SavedModel's" in caplog.text
    with pytest.raises(ModelLoadError, match="LiteRT outputs differ"):
        Predictor.load(model_dir, ModelRuntime.LITERT)


def test_the_export_ships_its_litert_compile_and_the_service_runs_it(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (model_dir / "saved_model" / LITERT_FILENAME).is_file()

    def no_converting(saved_model_dir: Path) -> bytes:
        raise AssertionError(f"converted {saved_model_dir} at load time")

    monkeypatch.setattr(model_runtime, "compile_to_litert", no_converting)
    assert Predictor.load(model_dir, ModelRuntime.LITERT).runtime is ModelRuntime.LITERT


def test_a_shipped_compile_that_does_not_run_is_compiled_anew(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    edited = shutil.copytree(model_dir, tmp_path / "model")
    (edited / "saved_model" / LITERT_FILENAME).write_bytes(b"not a flatbuffer")
    card = read_metadata(edited)  # the checksum covers the compile: sign the edit
    checksum = hash_directory(edited / "saved_model")
    write_metadata(card.model_copy(update={"saved_model_sha256": checksum}), edited)
    with caplog.at_level(logging.WARNING, logger="app.core.model_runtime"):
        predictor = Predictor.load(edited, ModelRuntime.LITERT)
    assert predictor.runtime is ModelRuntime.LITERT
    assert "compiling the model anew" in caplog.text
    features = probe_features(n_rows=8, seed=5)
    np.testing.assert_allclose(
        predictor.predict_proba(features),
        Predictor.load(model_dir, ModelRuntime.TENSORFLOW).predict_proba(features),
        atol=1e-5,
    )


@pytest.mark.parametrize("runtime", ["tensorflow", "litert"])
def test_the_runtime_setting_reaches_health(model_dir: Path, runtime: str) -> None:
    settings = make_settings(model_dir, runtime=runtime)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json()["runtime"] == runtime
        response = client.post("/predict", json={"formula": "Fe2O3", "density": 5.24})
        assert response.status_code == 200


def test_an_unknown_runtime_is_a_settings_error(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="runtime"):
        make_settings(model_dir, runtime="onnx")
