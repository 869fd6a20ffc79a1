"""Configuration of the network, frozen and written beside every exported model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """Shape of the network and the density scaling baked into it.

    Attributes:
        hidden_units: Width of each hidden layer.
        dropout: Dropout rate after each hidden layer.
        density_mean: Mean density of the training split, g/cm³ (used to standardise).
        density_std: Standard deviation of the training-split density, g/cm³.
        seed: Seed of the weight initialisation.
    """

    hidden_units: tuple[int, ...] = (128, 64)
    dropout: float = 0.2
    density_mean: float = 5.0
    density_std: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.hidden_units or any(units < 1 for units in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units=}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout=}")
        if self.density_std <= 0:
            raise ValueError(f"density_std must be positive, got {self.density_std=}")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready values."""
        return asdict(self)
