"""Shared fixtures: real SavedModels exported by the project's own training code."""

from __future__ import annotations

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
from model_training.architecture import build_model
from model_training.config import ModelConfig
from model_training.export import export_model
from model_training.placeholder import export_placeholder

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


def make_settings(model_dir: Path, **overrides: object) -> Settings:
    """Settings pointing at a model, ignoring any developer ``.env`` file."""
    return Settings(_env_file=None, model_dir=model_dir, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    """The real app, its lifespan run, serving the fixture model."""
    with TestClient(create_app(make_settings(model_dir))) as test_client:
        yield test_client
