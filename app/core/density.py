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
from app.core.features import DENSITY_INDEX, MAX_DENSITY, FeatureMatrix
from app.core.heads import Outputs, ServedHead, probe_rows
from app.core.model_card import DENSITY_OUTPUT_COLUMNS, DensityMetadata
from app.core.model_checks import read_head_card


class DensityEstimator(ServedHead[DensityMetadata]):
    """A loaded density estimator with its card; thread-safe for concurrent calls.

    Its model maps ``(n, N_FEATURES)`` features to ``(n, 1)`` densities in g/cm³.
    """

    what = "density estimator"

    @classmethod
    def read_card(cls, directory: Path) -> DensityMetadata:
        """Read the estimator's card, which must name the one output this code reads."""
        return read_head_card(directory, DensityMetadata, DENSITY_OUTPUT_COLUMNS)

    def probe(self) -> FeatureMatrix:
        """Fe, and FeO, at no density: the estimator never reads it."""
        return probe_rows("Fe", "O")

    def check_probe(self, outputs: Outputs) -> None:
        """Refuse misshaped, non-finite or unphysical test densities."""
        if outputs.shape != (2, 1) or not np.all(np.isfinite(outputs)):
            raise ModelLoadError(
                f"density estimator returned {outputs.shape} non-finite or misshaped"
            )
        if not np.all((outputs > 0) & (outputs <= MAX_DENSITY)):
            raise ModelLoadError(
                f"density estimator's test densities {outputs[:, 0]} are not physical"
            )

    def estimate(self, features: FeatureMatrix) -> npt.NDArray[np.float32]:
        """Estimate the density of each row from its composition.

        Args:
            features: ``(n, N_FEATURES)`` rows; their density slot is not read.

        Returns:
            ``(n,)`` densities in g/cm³.
        """
        rows = features.copy()
        rows[:, DENSITY_INDEX] = 0.0  # the slot may hold NaN, the mark of "to be estimated"
        return np.asarray(self.run(rows), np.float32)[:, 0]
