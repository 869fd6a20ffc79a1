"""The manifest that seals a model directory: every file the service reads, by SHA-256.

Each model directory (the Materials Project head's, and each head's beside it) holds a
``SHA256SUMS`` written by the export: one line per file, ``<sha256>  <relative path>``,
sorted by path, in the format ``sha256sum -c SHA256SUMS`` checks. It lists every regular file
under the directory (the card ``metadata.json``, ``MODEL_CARD.md``, the plots, the SavedModel)
except itself and the head directories nested in the Materials Project head's, which carry
their own. At load, the directory must hold exactly the files listed, with those digests:
an edited card, a file added, removed, renamed or split, a symbolic link or anything but a
regular file anywhere inside, and the service refuses to start.

One file per line with names restricted to a plain character set (no whitespace, no
leading dot) makes the manifest unambiguous, unlike a hash over the concatenated names and
contents, in which moving bytes from one file into the next kept the digest.

``python -m app.core.model_manifest DIR`` rewrites the manifests of a model directory and of
its heads over the files as they are now (after an edit made on purpose).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from app.core.errors import ModelLoadError

MANIFEST_FILENAME = "SHA256SUMS"
"""The manifest each model directory holds (``sha256sum`` format)."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
"""A file or directory name a model directory may hold: what the export writes, and nothing
that could break a manifest line (whitespace, newlines) or hide (a leading dot)."""
_LINE = re.compile(r"([0-9a-f]{64})  ([^\n]+)")
_CHUNK = 1 << 20


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _walk(root: Path, heads: Sequence[str]) -> Iterator[Path]:
    """Yield every regular file under ``root``, refusing anything else.

    Raises:
        ModelLoadError: A symbolic link, a special file, a name outside `_NAME`, or an
            unreadable directory.
    """
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            raise ModelLoadError(f"cannot read {directory}: {exc.strerror}") from exc
        for entry in entries:
            path = Path(entry.path)
            relative = _relative(root, path)
            if entry.is_symlink():
                # A link could point anywhere (/etc/passwd served as a plot); the export
                # writes none, so one can only be an edit.
                raise ModelLoadError(
                    f"{path} is a symbolic link; a model directory holds only regular files"
                )
            if not _NAME.fullmatch(entry.name):
                raise ModelLoadError(
                    f"{relative!r} in {root} is not a file name a model directory holds"
                )
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError as exc:
                raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from exc
            if stat.S_ISDIR(mode):
                if directory != root or entry.name not in heads:
                    pending.append(path)
            elif stat.S_ISREG(mode):
                if directory != root or entry.name != MANIFEST_FILENAME:
                    yield path
            else:
                raise ModelLoadError(f"{path} is not a regular file")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from exc
    return digest.hexdigest()


def file_digests(directory: Path, heads: Sequence[str] = ()) -> dict[str, str]:
    """Return the SHA-256 of every file under a directory, by relative POSIX path.

    Args:
        directory: The directory.
        heads: Names of subdirectories of ``directory`` left out: head directories nested in
            the Materials Project head's, sealed by their own manifests.

    Returns:
        Each file's hex digest, the manifest itself left out.

    Raises:
        ModelLoadError: The directory holds a symbolic link, a special file or an odd name,
            or a file cannot be read.
    """
    return {_relative(directory, path): _sha256(path) for path in _walk(directory, heads)}


def render_manifest(digests: Mapping[str, str]) -> str:
    """The manifest's text: ``<sha256>  <path>`` per file, sorted by path."""
    return "".join(f"{digests[path]}  {path}\n" for path in sorted(digests))


def hash_directory(directory: Path) -> str:
    """Return one SHA-256 for a whole directory: the digest of its manifest's text.

    Args:
        directory: The directory to hash (a ``saved_model/``).

    Returns:
        The hex digest; it changes when any file is added, removed, renamed or edited.

    Raises:
        ModelLoadError: As `file_digests`.
    """
    return digest_of(file_digests(directory))


def digest_of(digests: Mapping[str, str]) -> str:
    """The `hash_directory` of the files ``digests`` lists (paths relative to that directory)."""
    return hashlib.sha256(render_manifest(digests).encode()).hexdigest()


def write_manifest(directory: Path, heads: Sequence[str] = ()) -> Path:
    """Seal a model directory: write its manifest over its files as they are now.

    Args:
        directory: The model or head directory.
        heads: Nested head directories to leave out (see `file_digests`).

    Returns:
        The manifest's path.

    Raises:
        ModelLoadError: The directory holds something a model directory may not.
    """
    path = directory / MANIFEST_FILENAME
    path.write_text(render_manifest(file_digests(directory, heads)), encoding="ascii")
    return path


def read_manifest(directory: Path) -> dict[str, str]:
    """Read and parse a directory's manifest.

    Returns:
        Each listed file's digest, by relative path.

    Raises:
        ModelLoadError: The manifest is missing, unreadable or malformed.
    """
    path = directory / MANIFEST_FILENAME
    try:
        text = path.read_bytes().decode("ascii")
    except FileNotFoundError as exc:
        raise ModelLoadError(
            f"{path} is missing: the directory is not as exported (export it again, or "
            f"seal it with `python -m app.core.model_manifest {directory}`)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.fullmatch(line)
        relative = "" if match is None else match[2]
        if (
            match is None
            or not all(_NAME.fullmatch(part) for part in relative.split("/"))
            or relative in listed
        ):
            raise ModelLoadError(f"{path} line {number} is not '<sha256>  <path>': {line[:80]!r}")
        listed[relative] = match[1]
    return listed


def verify_manifest(directory: Path, heads: Sequence[str] = ()) -> dict[str, str]:
    """Refuse a model directory whose files are not exactly those its manifest lists.

    Args:
        directory: The model or head directory.
        heads: Nested head directories, checked against their own manifests.

    Returns:
        Each file's digest, by relative path (all as listed).

    Raises:
        ModelLoadError: The directory or its manifest is missing; or a file was added,
            removed, renamed or edited since the export; or it holds a symbolic link or
            anything but regular files.
    """
    if not directory.is_dir():
        raise ModelLoadError(f"model directory {directory} does not exist")
    listed = read_manifest(directory)
    found = {_relative(directory, path): path for path in _walk(directory, heads)}
    manifest = directory / MANIFEST_FILENAME
    if unexpected := sorted(found.keys() - listed.keys()):
        raise ModelLoadError(
            f"{found[unexpected[0]]} is not listed in {manifest} (added after export)"
        )
    if missing := sorted(listed.keys() - found.keys()):
        raise ModelLoadError(f"{directory / missing[0]} is missing (listed in {manifest})")
    for relative, path in sorted(found.items()):
        actual = _sha256(path)
        if actual != listed[relative]:
            raise ModelLoadError(
                f"{path} does not match its manifest {manifest}: sha256 {actual}, expected "
                f"{listed[relative]} (modified or corrupted after export)"
            )
    return listed


def seal_model_directory(model_dir: Path, heads: Sequence[str]) -> list[Path]:
    """Rewrite the manifests of a model directory and of the heads in it.

    Args:
        model_dir: The Materials Project head's directory.
        heads: The names its head directories may have.

    Returns:
        The manifests written.
    """
    written = [write_manifest(model_dir, heads)]
    for name in heads:
        head_dir = model_dir / name
        if head_dir.is_dir() and not head_dir.is_symlink():
            written.append(write_manifest(head_dir))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Seal model directories from the command line; returns the exit status."""
    from app.core.model_card import HEAD_DIRNAMES

    parser = argparse.ArgumentParser(
        prog="python -m app.core.model_manifest",
        description="Rewrite the SHA256SUMS of a model directory and of its heads over the "
        "files as they are now. Only for a directory whose files you have checked: the "
        "service trusts what the manifest lists.",
    )
    parser.add_argument("model_dir", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        for model_dir in args.model_dir:
            for path in seal_model_directory(model_dir, HEAD_DIRNAMES):
                print(f"wrote {path}")
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
