"""Shared fixtures: real SavedModels exported by the project's own training code."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app.config import Settings
from app.core.features import FEATURE_LAYOUT_VERSION, N_FEATURES
from app.core.model_card import MagneticOrdering, ModelMetadata
from app.main import create_app
from model_training.export import export_model
from model_training.mp.config import ModelConfig
from model_training.mp.network import build_model
from model_training.mp.placeholder import export_placeholder

FIXTURE_MODEL_VERSION = "test-fixture-1"
FIXTURE_ELEMENTS = ("Ba", "Ca", "Cl", "Fe", "H", "Mn", "Na", "Ni", "O", "Sr", "Ti")
FIXTURE_DENSITY_RANGE = (1.0, 10.0)


def fixture_metadata() -> ModelMetadata:
    """Model card of the fixture model: marked trained, on a known set of elements."""
    return ModelMetadata(
        model_version=FIXTURE_MODEL_VERSION,
        trained=True,
        description="test fixture: random weights, metadata of a trained model",
        created_at=datetime.now(UTC),
        feature_layout_version=FEATURE_LAYOUT_VERSION,
        n_features=N_FEATURES,
        classes=tuple(MagneticOrdering),
        elements_seen=FIXTURE_ELEMENTS,
        density_range=FIXTURE_DENSITY_RANGE,
        metrics={"macro_f1": 0.5},
        tensorflow_version=tf.__version__,
    )


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel exported by `model_training.export`, with a trained-model card."""
    model = build_model(ModelConfig(hidden_units=(16, 8), seed=1))
    return export_model(model, fixture_metadata(), tmp_path_factory.mktemp("models") / "fixture")


@pytest.fixture(scope="session")
def placeholder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained placeholder, exported as the committed one is."""
    return export_placeholder(tmp_path_factory.mktemp("models") / "placeholder")


def read_until_closed(connection: socket.socket) -> bytes:
    """Read what a server sends until it closes (or resets) the connection, then close it.

    A socket timeout propagates: it means the server kept the connection open.
    """
    chunks = []
    try:
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    connection.close()
    return b"".join(chunks)


def need_debian_package(found: str, missing: str) -> None:
    """Skip a test that needs a Debian package which is not installed; under CI, fail it.

    Args:
        found: The package's program, or "" when it was not found.
        missing: What to say when it is missing.
    """
    if found:
        return
    if os.environ.get("CI"):  # .ci/run installs it: there, its absence is a failure
        pytest.fail(missing)
    pytest.skip(missing)


def make_settings(model_dir: Path, **overrides: object) -> Settings:
    """Settings pointing at a model, ignoring any developer ``.env`` file."""
    return Settings(_env_file=None, model_dir=model_dir, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    """The real app, its lifespan run, serving the fixture model."""
    with TestClient(create_app(make_settings(model_dir))) as test_client:
        yield test_client


DENSITY_TEST_VERSION = "density-test-1"


@pytest.fixture(scope="session")
def density_model_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A copy of the fixture model with a density estimator, made as a user would make one."""
    from model_training.__main__ import main as training_main
    from tests.snapshot_fixture import write_snapshot

    root = tmp_path_factory.mktemp("density")
    snapshot = write_snapshot(root / "mp.csv", rows_per_class=30)
    served = shutil.copytree(model_dir, root / "model")
    code = training_main(
        [
            "density",
            "--data", str(snapshot),
            "--model-dir", str(served),
            "--run-dir", str(root / "run"),
            "--epochs", "60",
            "--batch-size", "16",
            "--ensemble-size", "1",
            "--version", DENSITY_TEST_VERSION,
            "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    return served


@pytest.fixture(scope="module")
def density_client(density_model_dir: Path) -> Iterator[TestClient]:
    """The real app serving the fixture model with its density estimator."""
    with TestClient(create_app(make_settings(density_model_dir))) as test_client:
        yield test_client
