"""Keeping TensorFlow's native start-up chatter off the service's standard error.

Loading TensorFlow and LiteRT prints, from C++ and before any Python logging is set up, lines
such as "Could not find cuda drivers on your machine" and "failed call to cuInit" on every
machine without a GPU, where they are expected. ``TF_CPP_MIN_LOG_LEVEL`` does not reach the
lines printed while the libraries load, so they are taken off file descriptor 2 instead.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

logger = logging.getLogger(__name__)

# Informational lines of TensorFlow and LiteRT on a CPU machine; any other line is kept.
_STARTUP_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|Could not find cuda drivers|cuInit|"
    r"XNNPACK delegate for CPU|cpu_feature_guard|Unable to register cu(DNN|FFT|BLAS)|TensorRT"
)


@contextmanager
def tensorflow_startup_noise_hidden() -> Iterator[None]:
    """Hold what is written to standard error in the block; give back all but TF's chatter.

    The hidden lines are logged at DEBUG level, with one INFO line saying how many there were.
    Everything else written to standard error in the block, Python's log lines included, is
    written back when the block ends.
    """
    sink = _memory_file()
    if sink is None:
        logger.debug("no file to hold TensorFlow's start-up lines in: they stay on stderr")
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            _replay(text.splitlines(keepends=True))


def _memory_file() -> IO[bytes] | None:
    """A file for standard error that needs no writable directory, if the system has one.

    An in-memory file first (Linux ``memfd``): ``docker run --read-only`` without a tmpfs
    leaves no writable temporary directory, and the service must still start.
    """
    if hasattr(os, "memfd_create"):
        try:
            return os.fdopen(os.memfd_create("magorder-stderr"), "w+b")
        except OSError:
            pass
    try:
        return tempfile.TemporaryFile()
    except OSError:
        return None


def _replay(lines: list[str]) -> None:
    hidden = [line.rstrip() for line in lines if _STARTUP_NOISE.search(line)]
    sys.stderr.writelines(line for line in lines if not _STARTUP_NOISE.search(line))
    sys.stderr.flush()
    if hidden:
        logger.info(
            "hid %d start-up line(s) of TensorFlow (CUDA probe, oneDNN, XNNPACK), expected on "
            "a machine without a GPU; log level DEBUG shows them",
            len(hidden),
        )
        for line in hidden:
            logger.debug("TensorFlow: %s", line)
