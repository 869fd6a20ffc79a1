"""The Materials Project head: the model's P(FM), P(NM), P(FiM), P(AFM), and its members' spread.

It is the model directory's own SavedModel (``<model dir>/saved_model/``), trained on the
Materials Project's DFT labels; the experiment head and the density estimator sit beside it in
directories of their own, sealed by manifests of their own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.errors import ModelLoadError
from app.core.features import FeatureMatrix
from app.core.heads import Outputs, ServedHead, probe_rows
from app.core.model_card import HEAD_DIRNAMES, MagneticOrdering, ModelMetadata
from app.core.model_checks import read_checked_card

_PROBABILITY_TOLERANCE = 1e-3


class MaterialsProjectHead(ServedHead[ModelMetadata]):
    """The loaded Materials Project head with its card; thread-safe for concurrent calls.

    Its model maps ``(n, N_FEATURES)`` features to ``(n, metadata.n_outputs)``: probabilities,
    columns in ``metadata.classes`` order, then the members' spread when the card has a
    confidence rule.
    """

    what = "model"
    nested_dirnames = HEAD_DIRNAMES

    @classmethod
    def read_card(cls, directory: Path) -> ModelMetadata:
        """Read the model card, whose classes must be exactly `MagneticOrdering`, in order."""
        metadata = read_checked_card(directory, ModelMetadata)
        # The order too: the training code always exports the columns in this order, so
        # another order can only be an edit (resealed on purpose or by mistake) that would
        # relabel every answer (NaCl called FM).
        if tuple(metadata.classes) != tuple(MagneticOrdering):
            raise ModelLoadError(
                f"model classes {[str(c) for c in metadata.classes]} are not exactly "
                f"{[str(c) for c in MagneticOrdering]}, in that order (the order the training "
                "code exports the model's columns in)"
            )
        return metadata

    def probe(self) -> FeatureMatrix:
        """One oxygen atom at 1 g/cm³, twice."""
        return probe_rows("O", density=1.0)

    def check_probe(self, outputs: Outputs) -> None:
        """Refuse outputs that are misshaped, or whose class columns are not probabilities."""
        if outputs.shape != (2, self.metadata.n_outputs):
            raise ModelLoadError(f"model returned shape {outputs.shape} for 2 rows")
        probabilities = outputs[:, : len(self.metadata.classes)]
        sums = probabilities.sum(axis=1)
        if not np.all(np.isfinite(probabilities)) or not np.allclose(
            sums, 1.0, atol=_PROBABILITY_TOLERANCE
        ):
            raise ModelLoadError(f"model outputs are not probabilities (row sums {sums})")
