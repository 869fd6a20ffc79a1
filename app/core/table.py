"""CSV in and out of a screening: finding the columns, streaming rows, writing cells safely."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from app.core.columns import (
    ADDED_COLUMNS,
    FORMULA_TRIGGERS,
    NUMERIC_COLUMNS,
    escape_formula,
    result_cells,
)
from app.core.errors import InvalidDensityError
from app.core.features import validate_density
from app.core.results import BatchItemError, BatchItemOk

FORMULA_COLUMNS = ("formula", "formula_pretty", "composition")
DENSITY_COLUMNS = ("density",)


class TableError(ValueError):
    """The input table cannot be screened as it is (missing column, clashing names)."""


def find_column(header: Sequence[str], names: Sequence[str], chosen: str | None, what: str) -> str:
    """Pick the column holding a quantity: the one asked for, or the first common name found.

    Args:
        header: The input's column names.
        names: Common names of the column, in order of preference (matched ignoring case).
        chosen: A column named by the user, which must exist.
        what: What the column holds, for messages.

    Returns:
        The column name as the input spells it.

    Raises:
        TableError: No such column.
    """
    if chosen is not None:
        if chosen not in header:
            raise TableError(
                f"no column {chosen!r} in the input; its columns are {list(header)}"
                f"{_delimiter_hint(header)}"
            )
        return chosen
    by_lower = {column.strip().lower(): column for column in header}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    flag = f"--{what}-column"
    raise TableError(
        f"no {what} column found: looked for {', '.join(names)}; its columns are "
        f"{list(header)}{_delimiter_hint(header) or f'; name the column with {flag}'}"
    )


def _delimiter_hint(header: Sequence[str]) -> str:
    """What to say when a lone column name holds another delimiter: the file is not CSV."""
    if len(header) == 1:
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs")):
            if delimiter in header[0]:
                return (
                    f"; the header is one column holding {name}: this file looks separated by "
                    f"{name}, and magorder reads comma-separated CSV (convert it, e.g. with "
                    "Python's csv module or a spreadsheet's 'save as CSV')"
                )
    return ""


@dataclass(frozen=True, slots=True)
class Columns:
    """Where the formula and the density are, and the header of the output.

    Attributes:
        formula: The formula column.
        density: The density column; None when the input has none (densities are then
            estimated from the composition).
        output: The output's columns.
    """

    formula: str
    density: str | None
    output: list[str]


def plan_columns(
    header: Sequence[str] | None,
    formula_column: str | None = None,
    density_column: str | None = None,
) -> Columns:
    """Find the input columns and lay out the output's.

    Args:
        header: The input's column names.
        formula_column: The formula column the user named, if any.
        density_column: The density column the user named, if any; without one, a column
            named ``density`` is used when there is one, else densities are estimated.

    Returns:
        Where the columns are, and the output's header.

    Raises:
        TableError: The input is empty, lacks a column, or already has an output column.
    """
    if not header:
        raise TableError("the input has no header row; its first line must name the columns")
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:
        raise TableError(
            f"the input names column(s) {repeated} more than once; every column needs its own name"
        )
    clashing = [column for column in ADDED_COLUMNS if column in header]
    if clashing:
        raise TableError(
            f"the input already has column(s) {clashing}, which the output adds; "
            "rename or drop them first"
        )
    by_lower = {column.strip().lower() for column in header}
    has_density = density_column is not None or not by_lower.isdisjoint(DENSITY_COLUMNS)
    return Columns(
        formula=find_column(header, FORMULA_COLUMNS, formula_column, "formula"),
        density=(
            find_column(header, DENSITY_COLUMNS, density_column, "density") if has_density else None
        ),
        output=[*header, *ADDED_COLUMNS],
    )


def read_chunks(reader: Iterable[dict[str, str]], size: int) -> Iterator[list[dict[str, str]]]:
    """Yield the rows of a CSV reader in lists of at most ``size``."""
    chunk: list[dict[str, str]] = []
    for row in reader:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def density_of(text: str | None) -> float | None:
    """Read a density cell as the service would check a JSON number.

    Returns:
        The density in g/cm³, or None for an empty cell (the density is then estimated).

    Raises:
        InvalidDensityError: The cell is not a number, or not a plausible density.
    """
    if text is None or not text.strip():
        return None
    # float() reads full-width and Arabic-Indic digits (U+FF16, U+0666) as 6; JSON would not.
    if not text.strip().isascii():
        raise InvalidDensityError(
            f"density {text!r} is not a number; write densities in ASCII digits, such as 6.67"
        )
    if "_" in text:  # float() reads '1_5' as 15.0; a JSON number cannot hold one either
        raise InvalidDensityError(f"density {text!r} is not a number")
    try:
        value = float(text)
    except ValueError:
        raise InvalidDensityError(f"density {text!r} is not a number") from None
    return validate_density(value)


def write_rows(
    writer: csv.DictWriter[str],
    rows: Sequence[dict[str, str]],
    refused: dict[int, str],
    results: Sequence[BatchItemOk | BatchItemError],
) -> None:
    """Write a chunk: each input row with its result or its error.

    Args:
        writer: The output.
        rows: The chunk's input rows.
        refused: Rows refused before prediction, by position in the chunk, with the reason.
        results: Results of the other rows, in order.
    """
    remaining = iter(results)
    for position, row in enumerate(rows):
        if position in refused:
            cells = {"error": refused[position]}
        else:
            cells = result_cells(next(remaining))
        writer.writerow({**row, **cells})


if TYPE_CHECKING:
    _DictWriter = csv.DictWriter[str]
else:  # csv.DictWriter takes no type argument at run time before Python 3.12
    _DictWriter = csv.DictWriter


_TRIGGER_SET = frozenset(FORMULA_TRIGGERS)


class _FormulaSafeWriter(_DictWriter):
    """A ``DictWriter`` whose text cells, header included, cannot run in a spreadsheet.

    The added numeric columns are left alone: they are numbers magorder writes, and must stay
    numbers.
    """

    def __init__(self, stream: IO[str], columns: Sequence[str]) -> None:
        super().__init__(
            stream, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
        )
        self._text_columns = [c for c in columns if c not in NUMERIC_COLUMNS]

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        """Write a row, its text cells escaped with `escape_formula`."""
        # Only each cell's first character is looked at, and a row is copied only when a cell
        # needs escaping: about 2 µs a row, against some 100 µs to predict it.
        get = rowdict.get
        risky = [
            column
            for column in self._text_columns
            if isinstance(cell := get(column), str) and cell[:1] in _TRIGGER_SET
        ]
        if risky:
            rowdict = {**rowdict, **{column: escape_formula(rowdict[column]) for column in risky}}
        return super().writerow(rowdict)


def open_writer(
    stream: IO[str], columns: Sequence[str], *, escape_formulas: bool = True
) -> csv.DictWriter[str]:
    """A CSV writer of the output columns, its header written.

    Args:
        stream: Where the CSV goes.
        columns: The output's columns.
        escape_formulas: Neutralise text cells a spreadsheet would run as formulas (see
            `escape_formula`); False writes every cell as it is.

    Returns:
        The writer, its header row written.
    """
    # "\n", not the csv module's "\r\n": the output is read by shell tools as often as by
    # spreadsheets, and both take "\n".
    writer = (
        _FormulaSafeWriter(stream, columns)
        if escape_formulas
        else csv.DictWriter(
            stream, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
        )
    )
    writer.writeheader()
    return writer
