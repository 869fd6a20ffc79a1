"""One shape for every served head: loaded with the shared checks, described by its card, run.

The Materials Project head, the experiment head and the density estimator are each an
exported SavedModel with a card and a manifest. `ServedHead` loads any of them the same way
(manifest, card, SavedModel checksum, signature, then a test call) and runs it on feature
rows; each head adds only what is its own: how its card is checked, what its test call must
give, and what its outputs mean. `app.core.predictor.Predictor` composes them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Generic, Self

import numpy as np
import numpy.typing as npt

from app.core.errors import ModelLoadError
from app.core.features import DENSITY_INDEX, N_FEATURES, FeatureMatrix, element_symbols
from app.core.model_card import SAVED_MODEL_DIRNAME, Card
from app.core.model_checks import verify_checksum
from app.core.model_manifest import verify_manifest
from app.core.model_runtime import ModelFn, ModelRuntime, load_signature

Outputs = npt.NDArray[np.float32]


def probe_rows(both: str, second: str = "", *, density: float = 0.0) -> FeatureMatrix:
    """Two feature rows for a head's test call: one atom of each element named.

    Args:
        both: The element of both rows.
        second: An element the second row adds, if any.
        density: Both rows' density slot.

    Returns:
        A ``(2, N_FEATURES)`` float32 matrix.
    """
    symbols = element_symbols()
    probe = np.zeros((2, N_FEATURES), dtype=np.float32)
    probe[:, symbols.index(both)] = 1.0
    if second:
        probe[1, symbols.index(second)] = 1.0
    probe[:, DENSITY_INDEX] = density
    return probe


class ServedHead(ABC, Generic[Card]):
    """A loaded SavedModel with its card; thread-safe for concurrent calls.

    Args:
        model_fn: Maps ``(n, N_FEATURES)`` float32 features to the head's ``(n, n_outputs)``.
        metadata: Its card.
        runtime: The runtime ``model_fn`` runs on.
    """

    what: ClassVar[str]
    """What messages call the head ("model", "experiment head", "density estimator")."""
    nested_dirnames: ClassVar[tuple[str, ...]] = ()
    """Head directories inside this one, sealed by manifests of their own."""

    def __init__(self, *, model_fn: ModelFn, metadata: Card, runtime: ModelRuntime) -> None:
        self._model_fn = model_fn
        self._metadata: Card = metadata
        self._runtime = runtime

    @classmethod
    def load(cls, directory: Path, runtime: ModelRuntime = ModelRuntime.AUTO) -> Self:
        """Load and check an exported head.

        Args:
            directory: Its directory (``metadata.json``, ``saved_model/`` and the manifest
                sealing them, `app.core.model_manifest`).
            runtime: How to execute it (see `app.core.model_runtime`).

        Returns:
            A head that has answered one test call.

        Raises:
            ModelLoadError: It is missing, corrupt, edited since its export (a file added,
                removed or changed, a symbolic link), not what this code reads, or cannot run
                on the runtime asked for; or its test call fails.
        """
        digests = verify_manifest(directory, cls.nested_dirnames)
        metadata = cls.read_card(directory)
        saved_model_dir = directory / SAVED_MODEL_DIRNAME
        verify_checksum(saved_model_dir, metadata.saved_model_sha256, digests)
        signature = load_signature(saved_model_dir, metadata.n_outputs, runtime)
        head = cls(model_fn=signature.model_fn, metadata=metadata, runtime=signature.runtime)
        try:
            outputs = head.run(head.probe())
        except Exception as exc:
            raise ModelLoadError(f"{cls.what} failed its test call: {exc}") from exc
        head.check_probe(outputs)
        return head

    @classmethod
    @abstractmethod
    def read_card(cls, directory: Path) -> Card:
        """Read the head's card and check that this code can serve it.

        Raises:
            ModelLoadError: The card is missing, invalid, or not what this code reads.
        """

    @abstractmethod
    def probe(self) -> FeatureMatrix:
        """The feature rows of the test call every load makes."""

    @abstractmethod
    def check_probe(self, outputs: Outputs) -> None:
        """Refuse a head whose test call's outputs are not what it should give.

        Raises:
            ModelLoadError: The outputs are misshaped, not finite, or not physical.
        """

    @property
    def metadata(self) -> Card:
        """The head's card: its version, training data and metrics (what describes it)."""
        return self._metadata

    @property
    def runtime(self) -> ModelRuntime:
        """The runtime executing the head."""
        return self._runtime

    def run(self, features: FeatureMatrix) -> Outputs:
        """Run the head on ``(n, N_FEATURES)`` rows: its ``(n, n_outputs)`` raw outputs."""
        return self._model_fn(features)
