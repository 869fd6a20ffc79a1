"""Checks of the fields the heads' configurations share: one rule and one message each."""

from __future__ import annotations


def check_hidden_stack(hidden_units: tuple[int, ...], dropout: float) -> None:
    """Refuse an empty or non-positive layer width, or a dropout outside ``[0, 1)``.

    Raises:
        ValueError: Either is out of range.
    """
    if not hidden_units or any(units < 1 for units in hidden_units):
        raise ValueError(f"hidden_units must be positive, got {hidden_units=}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout=}")


def check_positive(**counts: int) -> None:
    """Refuse a count below 1 (members, epochs, batch size, patience).

    Raises:
        ValueError: One of ``counts`` is below 1; the message names them all.
    """
    if min(counts.values()) < 1:
        given = ", ".join(f"{name}={value}" for name, value in counts.items())
        raise ValueError(f"{', '.join(counts)} must be positive, got {given}")


def check_shares(**shares: float) -> None:
    """Refuse a weight outside ``[0, 1]`` (class weighting, distillation).

    Raises:
        ValueError: One of ``shares`` is outside ``[0, 1]``; the message names them all.
    """
    if not all(0.0 <= share <= 1.0 for share in shares.values()):
        given = ", ".join(f"{name}={value}" for name, value in shares.items())
        raise ValueError(f"{', '.join(shares)} must be in [0, 1], got {given}")
