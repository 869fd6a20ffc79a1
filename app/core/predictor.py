"""The predictor: a model's heads, loaded together, composed into one prediction per compound."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from app.core.density import DensityEstimator
from app.core.errors import DensityRequiredError, ModelLoadError
from app.core.experiment import ExperimentHead, ExperimentPrediction
from app.core.features import (
    DensitySource,
    FeatureMatrix,
    ParsedCompound,
    case_warnings,
    vectorize,
)
from app.core.materials_project import MaterialsProjectHead
from app.core.model_card import (
    DENSITY_DIRNAME,
    EXPERIMENT_DIRNAME,
    ExperimentMetadata,
    MagneticOrdering,
    ModelMetadata,
)
from app.core.model_runtime import ModelRuntime, ProbabilityMatrix
from app.core.timing import StageTimer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's answer for one compound.

    Attributes:
        compound: The compound that was predicted, with the density used (estimated if it
            was not given).
        ordering: The most probable ordering.
        probabilities: Probability of each ordering; they sum to 1.
        warnings: What a user should know before trusting the answer.
        experiment: What experiment would find, when the model has an experiment head.
        member_spread: How far the model's ensemble members disagree (over the classes, the
            widest range of their probabilities of one class); None for a single network.
    """

    compound: ParsedCompound
    ordering: MagneticOrdering
    probabilities: dict[MagneticOrdering, float]
    warnings: tuple[str, ...]
    experiment: ExperimentPrediction | None = None
    member_spread: float | None = None

    @property
    def magnetic_probability(self) -> float:
        """The probability that MP finds the compound magnetic at all: 1 - P(NM)."""
        return 1.0 - self.probabilities[MagneticOrdering.NM]


def _share(value: float | None) -> str:
    return "an unknown share" if value is None else f"{value:.0%}"


_Head = TypeVar("_Head", ExperimentHead, DensityEstimator)


def _load_beside(head: type[_Head], head_dir: Path, runtime: ModelRuntime) -> _Head | None:
    """A head beside the Materials Project head, or None when the model has none.

    Raises:
        ModelLoadError: The head is there but fails its checks; the message names it.
    """
    if not head_dir.exists():
        return None
    try:
        return head.load(head_dir, runtime)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{head.what} {head_dir}: {exc}") from exc


class Predictor:
    """A loaded model: its heads composed into predictions; thread-safe for concurrent calls.

    Args:
        head: The Materials Project head.
        experiment: The experiment head, when the model has one.
        density: The density estimator, when the model has one.
    """

    def __init__(
        self,
        head: MaterialsProjectHead,
        *,
        experiment: ExperimentHead | None = None,
        density: DensityEstimator | None = None,
    ) -> None:
        self._head = head
        self._metadata = head.metadata
        self._experiment = experiment
        self._density = density
        self._elements_seen = frozenset(self._metadata.elements_seen)
        self._nm_column = self._metadata.classes.index(MagneticOrdering.NM)
        self._n_classes = len(self._metadata.classes)

    @classmethod
    def load(cls, model_dir: Path, runtime: ModelRuntime = ModelRuntime.AUTO) -> Predictor:
        """Load and check an exported model directory.

        Args:
            model_dir: A directory holding ``metadata.json``, ``saved_model/`` and the manifest
                sealing them (`app.core.model_manifest`), as written by
                `model_training.export.export_model`, and optionally an experiment head in
                ``experiment/`` (`model_training.experiment.export`) and a density estimator
                in ``density/`` (`model_training.density.export`).
            runtime: How to execute the SavedModels (see `app.core.model_runtime`).

        Returns:
            A predictor whose heads have each answered one test call.

        Raises:
            ModelLoadError: The directory is missing, corrupt, edited since its export (a
                file added, removed or changed, a symbolic link), or does not match this code's
                feature layout or classes; or the runtime asked for cannot run it; or it has
                a head (experiment, density) that fails the same checks.
        """
        return cls(
            MaterialsProjectHead.load(model_dir, runtime),
            experiment=_load_beside(ExperimentHead, model_dir / EXPERIMENT_DIRNAME, runtime),
            density=_load_beside(DensityEstimator, model_dir / DENSITY_DIRNAME, runtime),
        )

    @property
    def metadata(self) -> ModelMetadata:
        """The model card of the loaded model (its Materials Project head's)."""
        return self._metadata

    @property
    def runtime(self) -> ModelRuntime:
        """The runtime executing the model."""
        return self._head.runtime

    @property
    def experiment(self) -> ExperimentHead | None:
        """The experiment head, or None when the model has none."""
        return self._experiment

    @property
    def experiment_metadata(self) -> ExperimentMetadata | None:
        """The experiment head's card, or None when the model has no experiment head."""
        return None if self._experiment is None else self._experiment.metadata

    @property
    def experiment_version(self) -> str | None:
        """The experiment head's version, or None when the model has no experiment head."""
        return None if self._experiment is None else self._experiment.metadata.model_version

    @property
    def density_estimator(self) -> DensityEstimator | None:
        """The density estimator, or None when the model cannot estimate densities."""
        return self._density

    def predict_proba(self, features: FeatureMatrix) -> ProbabilityMatrix:
        """Run the model on a feature matrix.

        Args:
            features: A float32 array of shape ``(n, N_FEATURES)``.

        Returns:
            A float32 array of shape ``(n, len(classes))``; columns follow ``metadata.classes``.
        """
        return self._head.run(features)[:, : self._n_classes]

    def predict(
        self, compounds: Sequence[ParsedCompound], timer: StageTimer | None = None
    ) -> list[Prediction]:
        """Predict the magnetic ordering of validated compounds in one model call.

        Args:
            compounds: Compounds from `app.core.features.parse_compound`; those whose
                density is to be estimated get it from the density estimator first.
            timer: Receives the time spent in the ``featurize`` and ``model`` stages.

        Returns:
            One prediction per compound, in order.

        Raises:
            DensityRequiredError: A compound has no density and the model has no density
                estimator.
        """
        if not compounds:
            return []
        timer = timer or StageTimer()
        with timer.stage("featurize"):
            features = vectorize(compounds)
        with timer.stage("model"):
            compounds = self._with_estimated_densities(compounds, features)
            outputs = self._head.run(features)
            probabilities = outputs[:, : self._n_classes]
            spreads: list[float | None] = (
                outputs[:, self._n_classes].tolist()
                if self._metadata.confidence is not None
                else [None] * len(compounds)
            )
            experiments: list[ExperimentPrediction | None] = (
                [None] * len(compounds)
                if self._experiment is None
                else list(
                    self._experiment.predict(
                        list(compounds), features, probabilities[:, self._nm_column]
                    )
                )
            )
        classes = self._metadata.classes
        best = probabilities.argmax(axis=1).tolist()
        predictions = []
        for compound, row, column, spread, experiment in zip(
            compounds, probabilities.tolist(), best, spreads, experiments, strict=True
        ):
            answer = dict(zip(classes, row, strict=True))
            predictions.append(
                Prediction(
                    compound=compound,
                    ordering=classes[column],
                    probabilities=answer,
                    warnings=self.warnings_for(compound) + self.confidence_warnings(answer, spread),
                    experiment=experiment,
                    member_spread=None if spread is None else round(spread, 4),
                )
            )
        return predictions

    def confidence_warnings(
        self, probabilities: dict[MagneticOrdering, float], spread: float | None
    ) -> tuple[str, ...]:
        """Say when an answer is unsure, by the card's confidence rule.

        Args:
            probabilities: The answer's probabilities.
            spread: Its members' spread, when the model has members.

        Returns:
            A warning when the top class barely leads the second, and one when the members
            disagree; empty when neither, or when the card has no confidence rule.
        """
        rule = self._metadata.confidence
        if rule is None:
            return ()
        found = []
        (first, p_first), (second, p_second) = sorted(
            probabilities.items(), key=lambda item: item[1], reverse=True
        )[:2]
        if p_first - p_second < rule.margin_below:
            found.append(
                f"unsure answer: P({first}) {p_first:.2f} barely leads P({second}) "
                f"{p_second:.2f} (by less than {rule.margin_below:g}); held-out answers this "
                f"close were right {_share(rule.margin_accuracy)} of the time"
            )
        if spread is not None and rule.spread_above is not None and spread > rule.spread_above:
            found.append(
                f"the model's members disagree: their probabilities of one class differ by "
                f"{spread:.2f} (more than {rule.spread_above:g}); held-out answers with members "
                f"this split were right {_share(rule.spread_accuracy)} of the time"
            )
        return tuple(found)

    def check_density_available(self, compound: ParsedCompound) -> None:
        """Refuse a compound sent without density when the model cannot estimate one.

        Raises:
            DensityRequiredError: The compound's density is to be estimated, and the model
                has no density estimator.
        """
        if compound.density_source is DensitySource.ESTIMATED and self._density is None:
            raise DensityRequiredError(
                f"density is missing, and model {self._metadata.model_version} has no density "
                "estimator to estimate it from the composition: send the density in g/cm³"
            )

    def _with_estimated_densities(
        self, compounds: Sequence[ParsedCompound], features: FeatureMatrix
    ) -> Sequence[ParsedCompound]:
        """Fill in the density of compounds sent without one; ``features`` is updated too."""
        pending = [
            i for i, c in enumerate(compounds) if c.density_source is DensitySource.ESTIMATED
        ]
        if not pending:
            return compounds
        self.check_density_available(compounds[pending[0]])
        assert self._density is not None  # noqa: S101 - checked just above
        estimates = self._density.estimate(features[pending])
        features[pending, -1] = estimates
        filled = list(compounds)
        for i, estimate in zip(pending, estimates.tolist(), strict=True):
            filled[i] = replace(filled[i], density=round(estimate, 4))
        return filled

    def warnings_for(self, compound: ParsedCompound) -> tuple[str, ...]:
        """Say what a user should know before trusting a prediction for this compound.

        Args:
            compound: The compound to be predicted.

        Returns:
            Human-readable warnings; empty when nothing is unusual.
        """
        metadata = self._metadata
        if not metadata.trained:
            return (
                f"model {metadata.model_version} is an untrained placeholder: "
                "its probabilities carry no information",
            )
        found: list[str] = []
        if compound.density_source is DensitySource.ESTIMATED and self._density is not None:
            found.append(
                f"density not given: estimated from the composition as {compound.density:g} "
                f"g/cm³ (mean absolute error {self._density.metadata.test_mae:.2f} g/cm³ on "
                "held-out Materials Project compounds); polymorphs of one formula get one "
                "estimate, so send the density when it is known"
            )
        if compound.density_source is not DensitySource.STRUCTURE:
            found.extend(case_warnings(compound.formula))
        unseen = sorted(set(compound.amounts) - self._elements_seen)
        if unseen:
            found.append(
                f"element(s) {', '.join(unseen)} do not occur in the training data; "
                "the prediction is an extrapolation"
            )
        if metadata.density_range is not None:
            low, high = metadata.density_range
            if not low <= compound.density <= high:
                found.append(
                    f"density {compound.density:g} g/cm³ lies outside the training range "
                    f"[{low:g}, {high:g}] g/cm³"
                )
        if compound.is_fractional:
            found.append(
                "fractional (disordered) composition: the training data hold only "
                "ordered compounds with whole-number formulas"
            )
        return tuple(found)
