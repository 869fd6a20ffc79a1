"""The density estimator: a density from the composition, for formulas sent without one.

The estimator (``<model dir>/density/``) is a SavedModel trained on the Materials Project
snapshot's densities. It reads the 119-vector but never its density slot; a compound's
estimate is the density the Materials Project head is then given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.core.errors import ModelLoadError
from app.core.features import DENSITY_INDEX, MAX_DENSITY, N_FEATURES, FeatureMatrix
from app.core.model_card import DENSITY_OUTPUT_COLUMNS, DensityMetadata
from app.core.model_checks import load_head
from app.core.model_runtime import ModelFn, ModelRuntime


class DensityEstimator:
    """A loaded density estimator with its card; thread-safe for concurrent calls.

    Args:
        model_fn: Maps ``(n, N_FEATURES)`` features to ``(n, 1)`` densities in g/cm³.
        metadata: Its card.
        runtime: The runtime ``model_fn`` runs on.
    """

    def __init__(
        self, *, model_fn: ModelFn, metadata: DensityMetadata, runtime: ModelRuntime
    ) -> None:
        self._model_fn = model_fn
        self._metadata = metadata
        self._runtime = runtime

    @classmethod
    def load(cls, head_dir: Path, runtime: ModelRuntime = ModelRuntime.AUTO) -> DensityEstimator:
        """Load and check an exported density estimator.

        Args:
            head_dir: Its directory (``metadata.json`` and ``saved_model/``).
            runtime: How to execute it (see `app.core.model_runtime`).

        Returns:
            An estimator that has answered one test call.

        Raises:
            ModelLoadError: It is missing, corrupt, edited, or not what this code reads.
        """
        metadata, signature = load_head(head_dir, DensityMetadata, DENSITY_OUTPUT_COLUMNS, runtime)
        estimator = cls(model_fn=signature.model_fn, metadata=metadata, runtime=signature.runtime)
        estimator._check_outputs()
        return estimator

    @property
    def metadata(self) -> DensityMetadata:
        """The estimator's card."""
        return self._metadata

    @property
    def runtime(self) -> ModelRuntime:
        """The runtime executing the estimator."""
        return self._runtime

    def _check_outputs(self) -> None:
        probe = np.zeros((2, N_FEATURES), dtype=np.float32)
        probe[:, 25] = 1.0  # Fe
        probe[1, 7] = 1.0  # O
        try:
            out = self._model_fn(probe)
        except Exception as exc:
            raise ModelLoadError(f"density estimator failed its test call: {exc}") from exc
        if out.shape != (2, 1) or not np.all(np.isfinite(out)):
            raise ModelLoadError(f"density estimator returned {out.shape} non-finite or misshaped")
        if not np.all((out > 0) & (out <= MAX_DENSITY)):
            raise ModelLoadError(f"density estimator's test densities {out[:, 0]} are not physical")

    def estimate(self, features: FeatureMatrix) -> npt.NDArray[np.float32]:
        """Estimate the density of each row from its composition.

        Args:
            features: ``(n, N_FEATURES)`` rows; their density slot is not read.

        Returns:
            ``(n,)`` densities in g/cm³.
        """
        rows = features.copy()
        rows[:, DENSITY_INDEX] = 0.0  # the slot may hold NaN, the mark of "to be estimated"
        return np.asarray(self._model_fn(rows), np.float32)[:, 0]
