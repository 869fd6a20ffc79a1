"""Load-time checks every exported SavedModel passes, whichever head it is."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from app.core.errors import ModelLoadError
from app.core.features import FEATURE_LAYOUT_VERSION, N_FEATURES
from app.core.model_card import METADATA_FILENAME, Card, HeadCard, read_metadata
from app.core.model_manifest import digest_of


def check_feature_layout(layout_version: str, n_features: int, *, what: str = "model") -> None:
    """Refuse a model built for another feature layout or vector length.

    Raises:
        ModelLoadError: The layout or the length differs from what this service builds.
    """
    if layout_version != FEATURE_LAYOUT_VERSION:
        raise ModelLoadError(
            f"{what} was trained on feature layout {layout_version!r}, "
            f"but this service builds {FEATURE_LAYOUT_VERSION!r}"
        )
    if n_features != N_FEATURES:
        raise ModelLoadError(
            f"{what} expects {n_features} features, this service builds {N_FEATURES}"
        )


def read_checked_card(model_dir: Path, schema: type[Card]) -> Card:
    """Read a model directory's card and check that it fits this service's feature layout.

    Args:
        model_dir: The model (or head) directory.
        schema: The card's schema.

    Returns:
        The card.

    Raises:
        ModelLoadError: The directory or its card is missing or invalid, or the card is for
            another feature layout.
    """
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    try:
        metadata = read_metadata(model_dir, schema)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{model_dir / METADATA_FILENAME} is missing") from exc
    except ValidationError as exc:
        raise ModelLoadError(
            f"{model_dir / METADATA_FILENAME} is not a valid model card: {_describe(exc)}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{model_dir / METADATA_FILENAME} is not a valid model card: {exc}"
        ) from exc
    check_feature_layout(metadata.feature_layout_version, metadata.n_features)
    return metadata


def _describe(error: ValidationError) -> str:
    """Pydantic's complaints on one line (its own text spans several): ``field: message``."""
    return "; ".join(
        f"{'.'.join(map(str, detail['loc'])) or 'card'}: {detail['msg']}"
        for detail in error.errors(include_url=False)
    )


def verify_checksum(saved_model_dir: Path, expected: str | None, digests: dict[str, str]) -> None:
    """Refuse a SavedModel whose files are not those its card recorded at export.

    Args:
        saved_model_dir: The SavedModel directory.
        expected: The card's ``saved_model_sha256``.
        digests: The verified digests of the files of the directory holding it
            (`app.core.model_manifest.verify_manifest`), so no file is read twice.

    Raises:
        ModelLoadError: The directory is missing, the card has no checksum, or the files
            differ from it.
    """
    prefix = f"{saved_model_dir.name}/"
    files = {
        path.removeprefix(prefix): digest
        for path, digest in digests.items()
        if path.startswith(prefix)
    }
    if not files or not saved_model_dir.is_dir():
        raise ModelLoadError(f"SavedModel directory {saved_model_dir} does not exist")
    if expected is None:
        raise ModelLoadError("model card has no saved_model_sha256 to verify the model against")
    actual = digest_of(files)
    if actual != expected:
        raise ModelLoadError(
            f"SavedModel at {saved_model_dir} does not match its model card: sha256 {actual}, "
            f"expected {expected} (exported by another version, or edited)"
        )


def read_head_card(
    head_dir: Path, schema: type[HeadCard], output_columns: tuple[str, ...]
) -> HeadCard:
    """Read the card of a head beside the Materials Project head (experiment, density).

    Args:
        head_dir: The head's directory.
        schema: Its card's schema.
        output_columns: The output columns this service reads, which its card must name.

    Returns:
        Its card.

    Raises:
        ModelLoadError: The card is missing or invalid, for another feature layout, or names
            other outputs.
    """
    metadata = read_checked_card(head_dir, schema)
    if metadata.output_columns != output_columns:
        raise ModelLoadError(
            f"head outputs {list(metadata.output_columns)}, this service reads "
            f"{list(output_columns)}"
        )
    return metadata
