"""Screening a table: a CSV of compounds (or structure files) in, rows with predictions out.

``magorder predict`` and ``POST /predict/table`` both run it, so they write the same bytes.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from app.core.backend import Backend, BatchResults
from app.core.batch import CompoundQuery
from app.core.columns import ADDED_COLUMNS
from app.core.errors import InvalidDensityError
from app.core.results import BatchItemError
from app.core.structures import format_of_filename
from app.core.table import Columns, density_of, open_writer, read_chunks, write_rows


class Progress(Protocol):
    """Told how many rows were written (a ``tqdm`` bar, for the command line)."""

    def update(self, n: float | None = 1) -> bool | None:
        """Advance by ``n`` rows."""
        ...


@dataclass(slots=True)
class Summary:
    """What a run did.

    Attributes:
        rows: Input rows read.
        failed: Rows that got an error instead of a prediction.
        predicted: Predicted rows by predicted class.
    """

    rows: int = 0
    failed: int = 0
    predicted: Counter[str] = field(default_factory=Counter)

    def count(self, rows: int, refused: int, results: BatchResults) -> None:
        """Add a written chunk: its rows, those refused before prediction, and the results."""
        self.rows += rows
        self.failed += refused
        for result in results:
            if isinstance(result, BatchItemError):
                self.failed += 1
            else:
                self.predicted[result.prediction.value] += 1

    def describe(self) -> str:
        """One line for people: rows, failures and the predicted classes."""
        classes = ", ".join(f"{name} {count}" for name, count in sorted(self.predicted.items()))
        return (
            f"{self.rows} rows: {self.rows - self.failed} predicted"
            f"{f' ({classes})' if classes else ''}, {self.failed} failed"
        )


@dataclass(frozen=True, slots=True)
class _Output:
    """Where a screening's chunks go: each predicted, written, flushed and counted in turn."""

    writer: csv.DictWriter[str]
    sink: IO[str]
    backend: Backend
    summary: Summary
    progress: Progress | None

    @classmethod
    def open(
        cls,
        sink: IO[str],
        columns: Sequence[str],
        backend: Backend,
        summary: Summary | None,
        progress: Progress | None,
        escape_formulas: bool,
    ) -> _Output:
        """Write the header of ``columns`` to ``sink``; a new summary when none is given."""
        writer = open_writer(sink, columns, escape_formulas=escape_formulas)
        return cls(writer, sink, backend, Summary() if summary is None else summary, progress)

    def predict(self, queries: list[CompoundQuery]) -> BatchResults:
        """The results of a chunk's queries (none asked of the backend for an empty chunk)."""
        return self.backend.predict(queries) if queries else []

    def write(
        self, rows: Sequence[dict[str, str]], refused: dict[int, str], results: BatchResults
    ) -> None:
        """Write a chunk's rows with their results or errors, and count them."""
        write_rows(self.writer, rows, refused, results)
        self.sink.flush()  # each chunk reaches the file or pipe as it is done, not at the end
        self.summary.count(len(rows), len(refused), results)
        if self.progress is not None:
            self.progress.update(len(rows))


def screen(
    reader: Iterable[dict[str, str]],
    columns: Columns,
    sink: IO[str],
    backend: Backend,
    progress: Progress | None = None,
    summary: Summary | None = None,
    *,
    escape_formulas: bool = True,
) -> Summary:
    """Predict every row of a CSV and write it out with its prediction, chunk by chunk.

    Memory stays bounded by one chunk (the backend's batch size), whatever the input's length.

    Args:
        reader: The input rows (a ``csv.DictReader``, or rows read already).
        columns: Where the formula and density are, from `plan_columns`.
        sink: Where the output CSV goes.
        backend: What predicts.
        progress: Advanced by the number of rows written.
        summary: Counts to add to as each chunk is written, so that a caller interrupted
            midway knows how far the run got; a new one when omitted.
        escape_formulas: Neutralise text cells a spreadsheet would run as formulas; False
            writes every cell as it is (see `open_writer`).

    Returns:
        The counts of the run.

    Raises:
        BackendError: The predictions cannot be had.
    """
    out = _Output.open(sink, columns.output, backend, summary, progress, escape_formulas)
    for chunk in read_chunks(reader, backend.max_batch_size):
        refused: dict[int, str] = {}
        queries: list[CompoundQuery] = []
        for position, row in enumerate(chunk):
            extra = row.get(None)  # type: ignore[call-overload]  # DictReader's restkey
            if extra:
                named = len(columns.output) - len(ADDED_COLUMNS)
                refused[position] = (
                    f"the row has {named + len(extra)} cells but the header names {named}; "
                    "quote cells that hold a comma (a decimal comma such as 6,67 splits a cell)"
                )
                continue
            try:
                density = None if columns.density is None else density_of(row.get(columns.density))
            except InvalidDensityError as exc:
                refused[position] = str(exc)
                continue
            queries.append(CompoundQuery(formula=row.get(columns.formula) or "", density=density))
        out.write(chunk, refused, out.predict(queries))
    return out.summary


STRUCTURE_COLUMNS = ("file", "formula")
"""The columns before the added ones when structure files are screened."""


def read_structure_file(path: Path) -> CompoundQuery | str:
    """The query of a structure file, or why it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text: a structure file (CIF, POSCAR, ...) is text"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return CompoundQuery(
        structure=text, structure_format=format_of_filename(path.name), id=str(path)
    )


def _from_disk(files: Sequence[Path | str]) -> Callable[[int], CompoundQuery | str]:
    return lambda index: read_structure_file(Path(files[index]))


def screen_structures(
    files: Sequence[Path | str],
    sink: IO[str],
    backend: Backend,
    progress: Progress | None = None,
    summary: Summary | None = None,
    read: Callable[[int], CompoundQuery | str] | None = None,
    *,
    escape_formulas: bool = True,
) -> Summary:
    """Predict every structure file and write one CSV row per file, chunk by chunk.

    Args:
        files: The structure files (their names are the ``file`` column, as given).
        sink: Where the output CSV goes.
        backend: What predicts.
        progress: Advanced by the number of rows written.
        summary: Counts to add to as each chunk is written; a new one when omitted.
        read: Gives the query of ``files[i]`` from ``i``, or why it cannot be read (by
            position, not name: two uploads may share a name); files are read a chunk at a
            time, so memory holds one chunk of them. By default the file is read from disk.
        escape_formulas: As for `screen`.

    Returns:
        The counts of the run, one row per file.

    Raises:
        BackendError: The predictions cannot be had.
    """
    if read is None:
        read = _from_disk(files)
    output = [*STRUCTURE_COLUMNS, *ADDED_COLUMNS]
    out = _Output.open(sink, output, backend, summary, progress, escape_formulas)
    for start in range(0, len(files), backend.max_batch_size):
        chunk = files[start : start + backend.max_batch_size]
        refused: dict[int, str] = {}
        queries: list[CompoundQuery] = []
        for position in range(len(chunk)):
            query = read(start + position)
            if isinstance(query, str):
                refused[position] = query
            else:
                queries.append(query)
        results = out.predict(queries)
        formulas = iter(
            "" if isinstance(result, BatchItemError) else result.formula for result in results
        )
        rows = [
            {"file": str(path), "formula": "" if i in refused else next(formulas)}
            for i, path in enumerate(chunk)
        ]
        out.write(rows, refused, results)
    return out.summary
