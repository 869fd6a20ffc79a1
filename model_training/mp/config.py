"""Configurations of the network and of its training, frozen and written beside every model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from model_training.checks import check_hidden_stack, check_positive, check_shares


class Preset(StrEnum):
    """Network architectures the trainer can build.

    * ``magorder``: derived composition features (fractions, fraction-weighted element
      properties, volume per atom) computed in the graph, standardised, then a small MLP.
    * ``seed``: the original study's network, 40 x 256 SiLU layers on the raw 119-vector,
      kept as a reference to compare against.
    """

    MAGORDER = "magorder"
    SEED = "seed"


SEED_PRESET_DEPTH = 40
SEED_PRESET_WIDTH = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """Shape of the network.

    Attributes:
        preset: Which architecture to build; ``seed`` ignores ``hidden_units`` and ``dropout``.
        hidden_units: Width of each hidden layer.
        dropout: Dropout rate after each hidden layer.
        ensemble_size: Networks trained with different seeds whose logits the served model
            averages; averaging cancels part of each one's variance.
        seed: Seed of the weight initialisation (member ``i`` uses ``seed + i``).
        quantile_bins: The network also reads each derived feature's rank among the
            training rows, from quantiles this many bins apart (`QuantileRanks`); 0 reads
            the standardised features alone.
        tree_sets: LightGBM boosters (seeds ``seed``, ``seed + 1``, ...) compiled into the
            served graph beside the networks (`model_training.tree_blend`); 0: networks only.
        tree_depth: Depth cap of their trees; each tree costs every row ``tree_depth``
            gathers, whatever its leaves.
        tree_learning_rate: Their learning rate: higher keeps fewer, cheaper trees.
    """

    preset: Preset = Preset.MAGORDER
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.2
    ensemble_size: int = 3
    seed: int = 0
    quantile_bins: int = 32
    tree_sets: int = 3
    tree_depth: int = 10
    tree_learning_rate: float = 0.2

    def __post_init__(self) -> None:
        check_hidden_stack(self.hidden_units, self.dropout)
        check_positive(ensemble_size=self.ensemble_size)
        if self.quantile_bins < 0:
            raise ValueError(f"quantile_bins must not be negative, got {self.quantile_bins=}")
        if self.tree_sets < 0 or not 1 <= self.tree_depth <= 16:
            raise ValueError(f"bad {self.tree_sets=} or {self.tree_depth=} (depth 1 to 16)")
        if not 0.0 < self.tree_learning_rate <= 1.0:
            raise ValueError(f"tree_learning_rate must be in (0, 1], {self.tree_learning_rate=}")

    @classmethod
    def for_preset(cls, preset: Preset, *, seed: int = 0) -> ModelConfig:
        """Return the configuration a preset is trained with by default.

        Args:
            preset: The architecture.
            seed: Seed of the weight initialisation.

        Returns:
            The preset's configuration.
        """
        if preset is Preset.SEED:
            return cls(
                preset=preset,
                hidden_units=(SEED_PRESET_WIDTH,) * SEED_PRESET_DEPTH,
                dropout=0.0,
                ensemble_size=1,
                seed=seed,
                quantile_bins=0,
                tree_sets=0,
            )
        return cls(preset=preset, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """How a network is fitted.

    Attributes:
        epochs: Most passes over the training split.
        batch_size: Rows per gradient step (global, across replicas).
        learning_rate: Peak learning rate of Adam (cosine decay over ``epochs``).
        weight_decay: Decoupled weight decay of AdamW.
        patience: Epochs without a better validation macro-F1 before training stops.
        class_weighting: Exponent of inverse class frequency used as class weight: 0 gives
            every row the same weight, 1 makes every class count equally.
        label_smoothing: Label smoothing of the cross-entropy.
        distillation: Weight of a LightGBM teacher's out-of-fold probabilities in the
            training targets (the rest is the one-hot label); 0 trains on labels only.
        teacher_rounds: Boosting rounds of each teacher fold.
        warmup_epochs: Epochs before early stopping starts watching (validation macro-F1 is
            noisy early on, and an early lucky epoch must not end training).

    Seeds of initialisation, dropout and shuffling are `ModelConfig.seed`.
    """

    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 12
    class_weighting: float = 0.5
    label_smoothing: float = 0.0
    distillation: float = 0.5
    teacher_rounds: int = 500
    warmup_epochs: int = 10

    def __post_init__(self) -> None:
        check_positive(epochs=self.epochs, batch_size=self.batch_size, patience=self.patience)
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate=}")
        check_shares(class_weighting=self.class_weighting, distillation=self.distillation)
        if self.teacher_rounds < 1 or self.warmup_epochs < 0:
            raise ValueError(f"bad {self.teacher_rounds=} or {self.warmup_epochs=}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing=}")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready values."""
        return asdict(self)
