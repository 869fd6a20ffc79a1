"""Start-up without a writable /tmp: the stderr capture copes, the service refuses in words."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.errors import NoTemporaryDirectoryError
from app.core.model_runtime import check_temporary_directory
from app.core.native_stderr import tensorflow_startup_noise_hidden
from app.main import create_app
from tests.conftest import make_settings


def test_the_expected_chatter_is_hidden_and_the_rest_given_back(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with tensorflow_startup_noise_hidden():
        os.write(2, b"I0000 cuda_platform.cc] Could not find cuda drivers on your machine\n")
        os.write(2, b"a real problem\n")
    err = capfd.readouterr().err
    assert "a real problem" in err
    assert "cuda drivers" not in err


def test_without_any_writable_temporary_place_the_block_still_runs(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # As under `docker run --read-only` without a tmpfs, on a system without memfd.
    def refuse(*_: object, **__: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "memfd_create", refuse, raising=False)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    ran = False
    with tensorflow_startup_noise_hidden():
        os.write(2, b"still on stderr\n")
        ran = True
    assert ran
    assert "still on stderr" in capfd.readouterr().err


def test_no_writable_temporary_directory_is_a_one_line_refusal(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def none_usable() -> str:
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")

    monkeypatch.setattr(tempfile, "gettempdir", none_usable)
    with pytest.raises(NoTemporaryDirectoryError, match="docker run --tmpfs /tmp"):
        check_temporary_directory()
    # The app refuses to start with that one line, before TensorFlow would fail to import.
    with pytest.raises(NoTemporaryDirectoryError), TestClient(create_app(make_settings(model_dir))):
        pass
    refusals = [r.getMessage() for r in caplog.records if "refusing to start" in r.getMessage()]
    assert refusals == [
        "refusing to start: no writable temporary directory (TensorFlow needs one to load): give "
        "the container one (docker run --tmpfs /tmp, as docker-compose.yml does) or set TMPDIR "
        "to a writable directory (No usable temporary directory found in ['/tmp'])"
    ]
