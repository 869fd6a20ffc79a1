"""The experiment head: what a measurement would find, combined with the MP head's P(NM).

The head (``<model dir>/experiment/``) is a SavedModel trained on reported Curie and Néel
temperatures. For a compound that orders magnetically it gives P(FM | magnetic) — ferrimagnets
count as FM, as in the sources — and the 10 %, 50 % and 90 % quantiles of its ordering
temperature. It has never seen a non-magnetic compound, so the experimental three-way answer
takes P(NM) from the Materials Project head and splits the rest by the head's odds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.core.errors import ModelLoadError
from app.core.features import FeatureMatrix, ParsedCompound, element_symbols
from app.core.heads import Outputs, ServedHead, probe_rows
from app.core.model_card import (
    EXPERIMENT_OUTPUT_COLUMNS,
    ExperimentalOrdering,
    ExperimentMetadata,
)
from app.core.model_checks import read_head_card
from app.core.model_runtime import ModelFn, ModelRuntime

_P_FM, _LOW, _MEDIAN, _HIGH = range(len(EXPERIMENT_OUTPUT_COLUMNS))

FROZEN_4F_ELEMENTS = frozenset({"Pr", "Nd", "Pm", "Sm", "Tb", "Dy", "Ho", "Er", "Tm", "Yb"})
"""Lanthanides whose 4f electrons Materials Project's calculations freeze in the core (their
potentials in pymatgen's ``MPRelaxSet`` are ``_3`` or ``_2``): MP's DFT sees no moment on
them, so its NM verdict on their compounds says nothing about experiment, where their 4f
moments order (often at a few kelvin). La (4f0) and Lu (4f14) carry none; Ce, Eu and Gd keep
their f electrons in MP's calculations."""
_NOTABLE_P_NM = 0.05
"""Below this, setting the MP head's P(NM) to 0 changes nothing worth a warning."""
_FROZEN_4F_COLUMNS = np.asarray([element_symbols().index(s) for s in sorted(FROZEN_4F_ELEMENTS)])


def experimental_p_nm(
    p_nm: npt.NDArray[np.float32], features: FeatureMatrix
) -> npt.NDArray[np.float32]:
    """The P(NM) the experimental answer uses: the MP head's, except where MP cannot see 4f.

    Args:
        p_nm: The Materials Project head's P(NM) of each row.
        features: The rows' ``(n, N_FEATURES)`` features.

    Returns:
        ``p_nm``, set to 0 for rows holding one of `FROZEN_4F_ELEMENTS`.
    """
    frozen = (features[:, _FROZEN_4F_COLUMNS] > 0).any(axis=1)
    return np.where(frozen, 0.0, p_nm).astype(np.float32)


class TransitionKind(StrEnum):
    """Which ordering temperature: Curie (FM and ferrimagnets) or Néel (AFM)."""

    CURIE = "curie"
    NEEL = "neel"


@dataclass(frozen=True, slots=True)
class OrderingTemperature:
    """The predicted temperature below which the compound orders, in kelvin.

    Attributes:
        kind: Curie when FM is the more probable magnetic answer, Néel otherwise.
        median_k: The median prediction.
        low_k: The low quantile (``quantiles[0]``).
        high_k: The high quantile (``quantiles[2]``).
        quantiles: Which quantiles low, median and high are (0.1, 0.5, 0.9: an 80 % interval).
    """

    kind: TransitionKind
    median_k: float
    low_k: float
    high_k: float
    quantiles: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class ExperimentPrediction:
    """What experiment would find, by the experiment head and the MP head's P(NM).

    Attributes:
        ordering: The most probable of FM, AFM and NM.
        probabilities: P(FM), P(AFM), P(NM); they sum to 1.
        p_fm_if_magnetic: The head's own P(FM | the compound orders magnetically).
        temperature: The ordering temperature, if it orders at all.
        warnings: What to know before trusting this answer.
    """

    ordering: ExperimentalOrdering
    probabilities: dict[ExperimentalOrdering, float]
    p_fm_if_magnetic: float
    temperature: OrderingTemperature
    warnings: tuple[str, ...]


class ExperimentHead(ServedHead[ExperimentMetadata]):
    """A loaded experiment head with its card; thread-safe for concurrent predictions.

    Its model maps ``(n, N_FEATURES)`` features to the ``(n, 4)`` output of
    `EXPERIMENT_OUTPUT_COLUMNS`.
    """

    what = "experiment head"

    def __init__(
        self, *, model_fn: ModelFn, metadata: ExperimentMetadata, runtime: ModelRuntime
    ) -> None:
        super().__init__(model_fn=model_fn, metadata=metadata, runtime=runtime)
        self._elements_seen = frozenset(metadata.elements_seen)

    @classmethod
    def read_card(cls, directory: Path) -> ExperimentMetadata:
        """Read the head's card, which must name the outputs this code reads."""
        return read_head_card(directory, ExperimentMetadata, EXPERIMENT_OUTPUT_COLUMNS)

    def probe(self) -> FeatureMatrix:
        """Fe and FeO at 5 g/cm³."""
        return probe_rows("Fe", "O", density=5.0)

    def check_probe(self, outputs: Outputs) -> None:
        """Refuse outputs that are not a probability and ordered temperature quantiles."""
        if outputs.shape != (2, len(EXPERIMENT_OUTPUT_COLUMNS)) or not np.all(np.isfinite(outputs)):
            raise ModelLoadError(
                f"experiment head returned {outputs.shape} non-finite or misshaped"
            )
        p_fm, low = outputs[:, _P_FM], outputs[:, _LOW]
        median, high = outputs[:, _MEDIAN], outputs[:, _HIGH]
        if not (np.all((p_fm >= 0) & (p_fm <= 1)) and np.all((low > 0) & (low <= median))):
            raise ModelLoadError("experiment head outputs are not a probability and quantiles")
        if not np.all(median <= high):
            raise ModelLoadError("experiment head's temperature quantiles are not ordered")

    # The name model_training's evaluation and the tests read the raw outputs by.
    outputs = ServedHead.run

    def predict(
        self,
        compounds: list[ParsedCompound],
        features: FeatureMatrix,
        p_nm: npt.NDArray[np.float32],
    ) -> list[ExperimentPrediction]:
        """Combine the head's answer with the Materials Project head's P(NM).

        Args:
            compounds: The compounds, for their warnings.
            features: Their ``(n, N_FEATURES)`` features.
            p_nm: The Materials Project head's P(NM) of each.

        Returns:
            One prediction per compound: P(NM) = P_MP(NM) (0 for compounds of
            `FROZEN_4F_ELEMENTS`, see `experimental_p_nm`), P(FM) = (1 - P(NM)) ·
            P(FM | magnetic), P(AFM) = (1 - P(NM)) · (1 - P(FM | magnetic)).
        """
        out = self.run(features).astype(np.float64)
        quantiles = self._metadata.temperature_quantiles
        nm_used = experimental_p_nm(p_nm, features)
        predictions = []
        for compound, row, nm, mp_nm in zip(
            compounds, out.tolist(), nm_used.tolist(), p_nm.tolist(), strict=True
        ):
            p_fm_if_magnetic = row[_P_FM]
            probabilities = {
                ExperimentalOrdering.FM: (1.0 - nm) * p_fm_if_magnetic,
                ExperimentalOrdering.AFM: (1.0 - nm) * (1.0 - p_fm_if_magnetic),
                ExperimentalOrdering.NM: nm,
            }
            ordering = max(probabilities, key=probabilities.__getitem__)
            kind = TransitionKind.CURIE if p_fm_if_magnetic >= 0.5 else TransitionKind.NEEL
            predictions.append(
                ExperimentPrediction(
                    ordering=ordering,
                    probabilities=probabilities,
                    p_fm_if_magnetic=p_fm_if_magnetic,
                    temperature=OrderingTemperature(
                        kind=kind,
                        median_k=row[_MEDIAN],
                        low_k=row[_LOW],
                        high_k=row[_HIGH],
                        quantiles=quantiles,
                    ),
                    warnings=self._warnings(compound, ordering, mp_nm),
                )
            )
        return predictions

    def _warnings(
        self, compound: ParsedCompound, ordering: ExperimentalOrdering, mp_nm: float
    ) -> tuple[str, ...]:
        found = []
        frozen = sorted(FROZEN_4F_ELEMENTS.intersection(compound.amounts))
        if frozen and mp_nm >= _NOTABLE_P_NM:
            found.append(
                f"holds {', '.join(frozen)}, whose 4f moments Materials Project's calculations "
                f"freeze: its P(NM) of {mp_nm:.2f} says nothing about experiment, so the "
                "experimental answer assumes the compound orders (such compounds often order "
                "only at a few kelvin)"
            )
        unseen = sorted(set(compound.amounts) - self._elements_seen)
        if unseen:
            found.append(
                f"element(s) {', '.join(unseen)} do not occur in the experimental training "
                "data; the experimental answer is an extrapolation"
            )
        if ordering is ExperimentalOrdering.NM:
            found.append(
                "most likely non-magnetic: the ordering temperature is what the experiment "
                "head predicts if the compound orders at all"
            )
        return tuple(found)
