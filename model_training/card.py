"""What every head's model card is written with: the Markdown file, sealed, and its plots.

Each head writes its own sections (``model_training.<head>.card``); `write_card` writes them
as ``MODEL_CARD.md`` into the head's directory and seals the directory again, since the
service serves the card and its plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.core.model_card import MODEL_CARD_FILENAME
from app.core.model_manifest import write_manifest


def write_card(directory: Path, lines: Sequence[str], *, keep: tuple[str, ...] = ()) -> Path:
    """Write a head's ``MODEL_CARD.md`` and seal its directory with the card and plots in it.

    Args:
        directory: The head's model directory.
        lines: The card's lines, joined by newlines.
        keep: Subdirectories (other heads) the seal leaves to their own manifests.

    Returns:
        The card's path.
    """
    path = directory / MODEL_CARD_FILENAME
    path.write_text("\n".join(lines), encoding="utf-8")
    # The service serves the card and its plots, so they are sealed with the model.
    write_manifest(directory, keep)
    return path


def save_figure(figure: Any, path: Path) -> None:
    """Lay out a Matplotlib figure, write it as a PNG at the cards' resolution and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_confusion_matrices(
    panels: list[tuple[str, list[list[float]]]],
    classes: list[str],
    path: Path,
    *,
    ylabel: str,
) -> None:
    """Draw row-normalised confusion matrices side by side, with counts, into a PNG.

    Args:
        panels: Title and confusion matrix (rows true, columns predicted) of each panel.
        classes: Class names, in the matrices' order.
        path: The PNG to write.
        ylabel: What the rows are (``label (MP)``, ``experiment``).
    """
    import matplotlib.pyplot as plt

    size = 1.1 * len(classes) + 1.4
    figure, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size * 0.85))
    for axis, (title, confusion) in zip(np.atleast_1d(axes), panels, strict=True):
        matrix = np.asarray(confusion)
        normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(classes)):
            for j in range(len(classes)):
                axis.text(
                    j,
                    i,
                    f"{normalised[i, j]:.2f}\n({matrix[i, j]:.0f})",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if normalised[i, j] > 0.5 else "black",
                )
        axis.set_xticks(range(len(classes)), classes)
        axis.set_yticks(range(len(classes)), classes)
        axis.set_xlabel("predicted")
        axis.set_ylabel(ylabel)
        axis.set_title(title, fontsize=9)
    save_figure(figure, path)
