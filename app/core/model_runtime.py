"""Running a SavedModel's serving signature, with TensorFlow or compiled to LiteRT.

The SavedModel is the artifact that is exported, checked and served. How its serving signature
is executed is a choice made at load time:

* ``tensorflow`` calls the signature's concrete function. On a CPU each call costs a few
  hundred microseconds of TensorFlow dispatch, whatever the batch size.
* ``litert`` runs the same signature compiled by TensorFlow's own LiteRT converter (built-in
  operators only, float32, no quantisation) with the LiteRT interpreter: a few microseconds
  per call. The export writes that compile beside the SavedModel (`LITERT_FILENAME`, covered
  by the card's checksum), which spares the service seconds of converting at start-up; without
  it, or if it fails, the service compiles one in memory. Either way the compiled model must
  reproduce the SavedModel's outputs on a fixed set of probe inputs, or it is not used.
* ``auto`` (the default) uses LiteRT when it compiles and agrees, TensorFlow otherwise.

See ``docs/benchmarks.md`` for the measured difference.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.core.errors import ModelLoadError, NoTemporaryDirectoryError
from app.core.features import DENSITY_INDEX, N_ELEMENTS, N_FEATURES, FeatureMatrix
from app.core.native_stderr import tensorflow_startup_noise_hidden

logger = logging.getLogger(__name__)

SIGNATURE_KEY = "serving_default"
LITERT_FILENAME = "model.tflite"
"""The export's LiteRT compile of the serving signature, inside ``saved_model/``."""
LITERT_TOLERANCE = 1e-4
"""Largest difference of any output allowed between LiteRT and TensorFlow: absolute for
values up to 1 (probabilities), relative above (temperatures in kelvin)."""

ProbabilityMatrix = npt.NDArray[np.float32]
ModelFn = Callable[[FeatureMatrix], ProbabilityMatrix]


class ModelRuntime(StrEnum):
    """How the serving signature is executed (``MAGORDER_RUNTIME``)."""

    AUTO = "auto"
    LITERT = "litert"
    TENSORFLOW = "tensorflow"


@dataclass(frozen=True, slots=True)
class LoadedSignature:
    """A callable serving signature and the runtime that executes it.

    Attributes:
        model_fn: Maps a ``(n, N_FEATURES)`` float32 matrix to ``(n, n_classes)`` probabilities.
        runtime: ``litert`` or ``tensorflow``.
    """

    model_fn: ModelFn
    runtime: ModelRuntime


class _TensorFlowSignature:
    """Calls a SavedModel's serving signature directly, without a Keras wrapper."""

    def __init__(self, saved_model: Any, input_name: str, output_name: str) -> None:
        import tensorflow as tf

        # A signature does not own the SavedModel's variables: keep the loaded object alive too,
        # or calls fail once it is garbage collected.
        self._saved_model = saved_model
        self._signature = saved_model.signatures[SIGNATURE_KEY]
        self._to_tensor = tf.constant
        self.input_name = input_name
        self.output_name = output_name

    def __call__(self, features: FeatureMatrix) -> ProbabilityMatrix:
        tensor = self._to_tensor(np.asarray(features, dtype=np.float32))
        outputs = self._signature(**{self.input_name: tensor})
        return np.asarray(outputs[self.output_name].numpy(), dtype=np.float32)


class _LiteRTSignature:
    """Runs a compiled signature with the LiteRT interpreter; safe to call from many threads."""

    def __init__(self, flatbuffer: bytes, input_name: str, output_name: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        # One thread: a second one halves the time of a 1,000-row batch (under a millisecond
        # either way) but costs every single-row request a cross-thread wake-up.
        self._interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        runner = self._interpreter.get_signature_runner(SIGNATURE_KEY)
        self._input_index = runner.get_input_details()[input_name]["index"]
        self._output_index = runner.get_output_details()[output_name]["index"]
        self._rows = -1  # batch size the interpreter's buffers are allocated for
        # An interpreter holds one set of buffers: calls must not overlap.
        self._lock = threading.Lock()

    def __call__(self, features: FeatureMatrix) -> ProbabilityMatrix:
        rows = np.ascontiguousarray(features, dtype=np.float32)
        interpreter = self._interpreter
        with self._lock:
            if rows.shape[0] != self._rows:
                interpreter.resize_tensor_input(self._input_index, rows.shape)
                interpreter.allocate_tensors()
                self._rows = rows.shape[0]
            interpreter.set_tensor(self._input_index, rows)
            interpreter.invoke()
            # get_tensor returns a copy, so the next call cannot overwrite this result.
            probabilities: ProbabilityMatrix = interpreter.get_tensor(self._output_index)
        return probabilities


def probe_features(n_rows: int = 256, seed: int = 0) -> FeatureMatrix:
    """Build plausible feature rows on which two runtimes of a model must agree.

    Args:
        n_rows: Number of rows.
        seed: Seed of the random compositions.

    Returns:
        A float32 matrix of compositions of one to six random elements with one to twelve
        atoms each, and densities between 0.5 and 20 g/cm³.
    """
    rng = np.random.default_rng(seed)
    features = np.zeros((n_rows, N_FEATURES), dtype=np.float32)
    for row in features:
        n_elements = rng.integers(1, 7)
        columns = rng.choice(N_ELEMENTS, size=n_elements, replace=False)
        row[columns] = rng.integers(1, 13, size=n_elements)
    features[:, DENSITY_INDEX] = rng.uniform(0.5, 20.0, size=n_rows)
    return features


def _load_tensorflow(saved_model_dir: Path, n_classes: int) -> _TensorFlowSignature:
    """Load the SavedModel and check the shapes of its serving signature."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(saved_model_dir))
    except Exception as exc:  # TensorFlow raises many unrelated types for a corrupt model
        raise ModelLoadError(f"cannot load SavedModel at {saved_model_dir}: {exc}") from exc
    signature = loaded.signatures.get(SIGNATURE_KEY)
    if signature is None:
        raise ModelLoadError(f"SavedModel at {saved_model_dir} has no {SIGNATURE_KEY!r} signature")
    _, input_specs = signature.structured_input_signature
    output_specs = signature.structured_outputs
    if len(input_specs) != 1 or len(output_specs) != 1:
        raise ModelLoadError(
            f"signature {SIGNATURE_KEY!r} must have one input and one output, "
            f"has inputs {list(input_specs)} and outputs {list(output_specs)}"
        )
    ((input_name, input_spec),) = input_specs.items()
    ((output_name, output_spec),) = output_specs.items()
    if input_spec.dtype != tf.float32 or input_spec.shape.as_list() != [None, N_FEATURES]:
        raise ModelLoadError(
            f"model input must be float32 of shape [None, {N_FEATURES}], "
            f"is {input_spec.dtype.name} {input_spec.shape.as_list()}"
        )
    if output_spec.shape.as_list()[-1:] != [n_classes]:
        raise ModelLoadError(
            f"model output must have {n_classes} columns, has shape {output_spec.shape.as_list()}"
        )
    return _TensorFlowSignature(loaded, input_name, output_name)


def compile_to_litert(saved_model_dir: Path) -> bytes:
    """Compile a SavedModel's serving signature to a LiteRT flatbuffer, built-in operators only.

    Args:
        saved_model_dir: The SavedModel directory.

    Returns:
        The flatbuffer.

    Raises:
        RuntimeError: The model does not compile with built-in operators.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[SIGNATURE_KEY]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer: bytes = converter.convert()
    except Exception as exc:  # the converter raises its own ConverterError and others
        raise RuntimeError(f"the model does not compile to LiteRT: {exc}") from exc
    return flatbuffer


def _checked_litert(flatbuffer: bytes, reference: _TensorFlowSignature) -> _LiteRTSignature:
    """The flatbuffer's interpreter, if it reproduces the SavedModel on the probe inputs.

    Raises:
        RuntimeError: The flatbuffer does not load, or its outputs differ.
    """
    try:
        compiled = _LiteRTSignature(flatbuffer, reference.input_name, reference.output_name)
        probe = probe_features()
        outputs = compiled(probe)
    except Exception as exc:  # a flatbuffer of another converter, or no flatbuffer at all
        raise RuntimeError(f"the compiled model does not run: {exc}") from exc
    expected = reference(probe)
    scale = np.maximum(np.abs(expected), 1.0)
    difference = float(np.max(np.abs(outputs - expected) / scale))
    if not difference <= LITERT_TOLERANCE:  # also catches NaN
        raise RuntimeError(
            f"LiteRT outputs differ from the SavedModel's by {difference:.2g} "
            f"(at most {LITERT_TOLERANCE:g} allowed, relative above 1)"
        )
    return compiled


def _compile_litert(saved_model_dir: Path, reference: _TensorFlowSignature) -> _LiteRTSignature:
    """The export's LiteRT compile, or one made now, checked against TensorFlow.

    Raises:
        RuntimeError: LiteRT is not installed, the model does not compile with built-in
            operators, or the compiled model disagrees with the SavedModel.
    """
    try:
        import ai_edge_litert.interpreter  # noqa: F401 - fail early, before compiling
    except ImportError as exc:
        raise RuntimeError(f"LiteRT is not installed ({exc})") from exc
    stored = saved_model_dir / LITERT_FILENAME
    if stored.is_file():
        try:
            return _checked_litert(stored.read_bytes(), reference)
        except RuntimeError as exc:
            logger.warning("compiling the model anew: %s does not serve (%s)", stored, exc)
    return _checked_litert(compile_to_litert(saved_model_dir), reference)


def check_temporary_directory() -> None:
    """Refuse to go on without a writable temporary directory, in words, not a traceback.

    TensorFlow asks for one while it is imported (absl's test helpers call
    ``tempfile.gettempdir()``), so without one the service cannot load its model at all.

    Raises:
        NoTemporaryDirectoryError: No candidate (``TMPDIR``, /tmp, /var/tmp, the working
            directory) is writable.
    """
    try:
        tempfile.gettempdir()
    except FileNotFoundError as exc:
        raise NoTemporaryDirectoryError(
            "no writable temporary directory (TensorFlow needs one to load): give the "
            "container one (docker run --tmpfs /tmp, as docker-compose.yml does) or set "
            f"TMPDIR to a writable directory ({exc.strerror})"
        ) from None


def load_signature(
    saved_model_dir: Path, n_classes: int, runtime: ModelRuntime = ModelRuntime.AUTO
) -> LoadedSignature:
    """Load a SavedModel's serving signature and make it callable with the chosen runtime.

    Args:
        saved_model_dir: The SavedModel directory.
        n_classes: Number of output columns the signature must have.
        runtime: ``tensorflow``, ``litert``, or ``auto`` for LiteRT with TensorFlow as fallback.

    Returns:
        The callable signature and the runtime it runs on.

    Raises:
        ModelLoadError: The SavedModel cannot be loaded or its signature has the wrong shape;
            or ``runtime`` is ``litert`` and the model cannot run on LiteRT.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tensorflow_startup_noise_hidden():
        reference = _load_tensorflow(saved_model_dir, n_classes)
        if runtime is ModelRuntime.TENSORFLOW:
            return LoadedSignature(reference, ModelRuntime.TENSORFLOW)
        try:
            compiled = _compile_litert(saved_model_dir, reference)
        except RuntimeError as exc:
            if runtime is ModelRuntime.LITERT:
                raise ModelLoadError(f"runtime 'litert' was asked for, but {exc}") from exc
            logger.warning("serving with TensorFlow, which is slower per call: %s", exc)
            return LoadedSignature(reference, ModelRuntime.TENSORFLOW)
    return LoadedSignature(compiled, ModelRuntime.LITERT)
