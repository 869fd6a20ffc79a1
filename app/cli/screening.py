"""``magorder predict``: a CSV of compounds in, the same rows with their predictions out."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from tqdm import tqdm

from app.api.schemas import BatchItemError
from app.cli.backends import Backend
from app.cli.table import (
    ADDED_COLUMNS,
    Columns,
    density_of,
    open_writer,
    read_chunks,
    write_rows,
)
from app.core.errors import InvalidDensityError


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

    def describe(self) -> str:
        """One line for people: rows, failures and the predicted classes."""
        classes = ", ".join(f"{name} {count}" for name, count in sorted(self.predicted.items()))
        return (
            f"{self.rows} rows: {self.rows - self.failed} predicted"
            f"{f' ({classes})' if classes else ''}, {self.failed} failed"
        )


def screen(
    reader: csv.DictReader[str],
    columns: Columns,
    sink: IO[str],
    backend: Backend,
    progress: tqdm[Any] | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Predict every row of a CSV and write it out with its prediction, chunk by chunk.

    Memory stays bounded by one chunk (the backend's batch size), whatever the input's length.

    Args:
        reader: The input rows.
        columns: Where the formula and density are, from `plan_columns`.
        sink: Where the output CSV goes.
        backend: What predicts.
        progress: Advanced by the number of rows written.
        summary: Counts to add to as each chunk is written, so that a caller interrupted
            midway knows how far the run got; a new one when omitted.

    Returns:
        The counts of the run.

    Raises:
        BackendError: The predictions cannot be had.
    """
    writer = open_writer(sink, columns.output)
    summary = Summary() if summary is None else summary
    for chunk in read_chunks(reader, backend.max_batch_size):
        refused: dict[int, str] = {}
        items: list[dict[str, Any]] = []
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
                density = density_of(row.get(columns.density))
            except InvalidDensityError as exc:
                refused[position] = str(exc)
                continue
            items.append({"formula": row.get(columns.formula) or "", "density": density})
        results = backend.predict(items) if items else []
        write_rows(writer, chunk, refused, results)
        sink.flush()  # each chunk reaches the file or pipe as it is done, not at the end
        summary.rows += len(chunk)
        summary.failed += len(refused)
        for result in results:
            if isinstance(result, BatchItemError):
                summary.failed += 1
            else:
                summary.predicted[result.prediction.value] += 1
        if progress is not None:
            progress.update(len(chunk))
    return summary
