"""Holding TensorFlow's native start-up lines off standard error, even with no writable /tmp."""

from __future__ import annotations

import os
import tempfile

import pytest

from app.core.native_stderr import tensorflow_startup_noise_hidden


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
