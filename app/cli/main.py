"""The ``magorder`` console script: ``magorder predict candidates.csv -o ranked.csv``."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from app import __version__
from app.client.remote import RemoteBackend
from app.core.backend import Backend, BackendError, LocalBackend
from app.core.screening import Summary, screen, screen_structures
from app.core.structures import FILE_SUFFIXES, format_of_filename
from app.core.table import DENSITY_COLUMNS, FORMULA_COLUMNS, TableError, plan_columns

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
"""What a shell reports for a command ended by SIGINT (128 + 2)."""

logger = logging.getLogger("app.cli")


class OutputError(ValueError):
    """The ``-o`` file cannot, or must not, be written (a directory, a link, read-only)."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def describe_versions() -> str:
    """The package's version, and the model version of each head in the model directory.

    Read from the heads' ``metadata.json`` alone (``MAGORDER_MODEL_DIR``, else the bundled
    model), without loading or checking any model: a head that is missing or unreadable is
    said so.
    """
    import json

    from app.config import DEFAULT_MODEL_DIR
    from app.core.model_card import DENSITY_DIRNAME, EXPERIMENT_DIRNAME, METADATA_FILENAME

    model_dir = Path(os.environ.get("MAGORDER_MODEL_DIR") or DEFAULT_MODEL_DIR)
    heads = (
        ("Materials Project head", model_dir),
        ("experiment head", model_dir / EXPERIMENT_DIRNAME),
        ("density estimator", model_dir / DENSITY_DIRNAME),
    )
    described = []
    for name, directory in heads:
        try:
            card = json.loads((directory / METADATA_FILENAME).read_text(encoding="utf-8"))
            version = f"{card['model_version']}"
        except (OSError, ValueError, KeyError, TypeError):
            version = "none" if not directory.is_dir() else "unreadable"
        described.append(f"{name} {version}")
    return f"magorder {__version__}\nmodel {model_dir}: {', '.join(described)}"


class _VersionAction(argparse.Action):
    """``--version``: print `describe_versions` and exit, as argparse's own version action."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kwargs.get("help", "")))

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(describe_versions())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magorder",
        description="Predict the magnetic ordering (FM, NM, FiM, AFM) of inorganic compounds.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="show the package's version and each head's model version, then exit",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="predict every row of a CSV of formulas (and densities), or structure files",
        description=(
            "Read a CSV with a header row, predict each row's magnetic ordering and write the "
            "rows back with prediction, p_FM, p_NM, p_FiM, p_AFM, reduced_formula, "
            "density_used, density_source, warnings, the experimental answer (exp_*) and "
            "error columns. Without a density column (or with an empty cell) the density is "
            "estimated from the composition. Given crystal structure files (CIF, POSCAR/"
            "CONTCAR, .vasp, .json, .xsf) or directories of them instead, it writes one row "
            "per file. A row that cannot be predicted gets its error and the run goes on. "
            "Exit status: 0 if every row was predicted, 1 if any row failed, 2 if the run "
            "could not be done."
        ),
    )
    predict.add_argument(
        "input",
        nargs="+",
        help="the CSV file to read (- for standard input), or structure files and "
        "directories of them",
    )
    predict.add_argument(
        "-o", "--output", type=Path, default=None, help="CSV file to write (default: stdout)"
    )
    predict.add_argument(
        "--url",
        default=None,
        help="send the rows to a running magorder service (e.g. http://localhost:8000) instead "
        "of loading the model here",
    )
    predict.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="exported model to load (default: MAGORDER_MODEL_DIR, else the bundled model)",
    )
    predict.add_argument(
        "--formula-column",
        default=None,
        help=f"column holding the formulas (default: the first of {', '.join(FORMULA_COLUMNS)})",
    )
    predict.add_argument(
        "--density-column",
        default=None,
        help=f"column holding densities in g/cm³ (default: {', '.join(DENSITY_COLUMNS)})",
    )
    predict.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1000,
        help="rows per model call or request; a server's own limit caps it (default: 1000)",
    )
    predict.add_argument(
        "--retries",
        type=_non_negative_int,
        default=3,
        help="with --url: further attempts after a connection error or a 503 (default: 3)",
    )
    predict.add_argument(
        "--no-escape-formulas",
        dest="escape_formulas",
        action="store_false",
        help="write every cell as it is; by default a text cell starting with =, +, -, @, a "
        "tab or a carriage return gets a leading ' so that a spreadsheet shows it rather "
        "than running it as a formula",
    )
    predict.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary"
    )
    return parser


def _local_backend(model_dir: Path | None, batch_size: int) -> LocalBackend:
    # Imported here: the settings read the environment, and loading pulls in TensorFlow,
    # neither of which `magorder --help` or `--url` needs.
    from pydantic import ValidationError

    from app.config import Settings, describe_settings_error
    from app.core.predictor import Predictor

    try:
        settings = Settings() if model_dir is None else Settings(model_dir=model_dir)
    except ValidationError as exc:
        raise BackendError(describe_settings_error(exc)) from exc
    predictor = Predictor.load(settings.model_dir, settings.runtime)
    return settings.local_backend(predictor, batch_size=batch_size)


@contextmanager
def _backend(args: argparse.Namespace) -> Iterator[Backend]:
    if args.url is None:
        yield _local_backend(args.model_dir, args.batch_size)
        return
    import httpx

    with httpx.Client(base_url=args.url, timeout=60.0) as client:
        remote = RemoteBackend(client, retries=args.retries)
        remote.limit_batch_size(args.batch_size)
        yield remote


def _open_input(name: str) -> IO[str]:
    # utf-8-sig: spreadsheets often start their CSV with a byte-order mark.
    if name == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    return Path(name).open(encoding="utf-8-sig", newline="")


def _same_file(input_name: str, output: Path) -> bool:
    try:
        return output.exists() and Path(input_name).samefile(output)
    except OSError:
        return False


def check_output(path: Path) -> None:
    """Refuse an ``-o`` file that cannot, or must not, be replaced, before any work is done.

    Args:
        path: The output file.

    Raises:
        OutputError: The path is a symbolic link, a directory, not a regular file, or
            read-only, or its directory is missing or not writable.
    """
    if path.is_symlink():
        # Moving the finished file into place would replace the link, not the file it names.
        raise OutputError(
            f"the output {path} is a symbolic link (to {path.readlink()}); give the file "
            "it points to, or another name"
        )
    if path.is_dir():
        raise OutputError(f"the output {path} is a directory; give a file name in it")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise OutputError(f"cannot write {path}: the directory {parent} {what}")
    if path.exists():
        if not path.is_file():
            raise OutputError(
                f"the output {path} is not a regular file; leave out -o to write to standard output"
            )
        # The mode bits too: root may write anything, but a file marked read-only is
        # meant to be kept, and replacing it would ignore the mark.
        if not path.stat().st_mode & 0o222 or not os.access(path, os.W_OK):
            raise OutputError(
                f"the output {path} is read-only; make it writable, or write elsewhere"
            )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: the directory {parent} is not writable")


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    # Named by the output, never by the hidden file beside it that the user did not ask for.
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


@contextmanager
def _replacing(path: Path) -> Iterator[IO[str]]:
    """Write beside ``path`` and move the file into place only once all of it is written."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        try:
            partial.unlink(missing_ok=True)  # left by a killed run of the same process id
            # "x": never write through a link someone put at the partial file's name.
            stream = partial.open("x", encoding="utf-8", newline="")
        except OSError as exc:
            raise _cannot_write(path, exc) from exc
        with stream:
            yield stream
        try:
            partial.replace(path)
        except OSError as exc:
            raise _cannot_write(path, exc) from exc
    finally:
        partial.unlink(missing_ok=True)


def structure_files(inputs: Sequence[str]) -> list[Path] | None:
    """The structure files the inputs name, or None when the input is one CSV.

    Args:
        inputs: The command's input arguments.

    Returns:
        Every structure file named, or found directly in a directory named, in order (a
        directory's files sorted by name); None for a single CSV (or ``-``).

    Raises:
        TableError: The inputs mix a CSV with structures, name several CSVs, or a directory
            holds no structure file.
    """
    if len(inputs) == 1 and (inputs[0] == "-" or inputs[0].lower().endswith(".csv")):
        return None
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and format_of_filename(p.name) is not None
            )
            if not found:
                raise TableError(
                    f"directory {path} holds no structure file (names ending in "
                    f"{', '.join(FILE_SUFFIXES)}, or POSCAR/CONTCAR)"
                )
            files.extend(found)
        elif format_of_filename(path.name) is not None:
            files.append(path)
        elif len(inputs) == 1:
            return None  # a CSV without the .csv suffix
        else:
            raise TableError(
                f"{name} is neither a structure file (names ending in "
                f"{', '.join(FILE_SUFFIXES)}, or POSCAR/CONTCAR) nor a directory of them; "
                "several inputs must all be structures (one CSV at a time)"
            )
    return files


def _count_rows(name: str) -> int | None:
    if name == "-":
        return None
    with Path(name).open("rb") as raw:
        return max(0, sum(1 for _ in raw) - 1)


def _sink(stack: ExitStack, output: Path | None) -> IO[str]:
    return stack.enter_context(_replacing(output)) if output is not None else sys.stdout


def _predict(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    summary = Summary()
    try:
        _screen_file(args, summary)
    except KeyboardInterrupt:
        # Raised through the output's context, so a partial -o file is removed, not kept.
        where = f"{args.output}, left as it was" if args.output else "standard output"
        written = 0 if args.output else summary.rows
        print(f"magorder: interrupted: {written} rows written to {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        elapsed = time.perf_counter() - started
        print(f"magorder: {summary.describe()} in {elapsed:.1f} s", file=sys.stderr)
    return EXIT_ROWS_FAILED if summary.failed else EXIT_OK


def _screen_file(args: argparse.Namespace, summary: Summary) -> None:
    """Screen ``args.input`` into ``args.output`` (or standard output), counting into summary."""
    from tqdm import tqdm

    if args.output is not None:
        check_output(args.output)  # before the model loads: a wrong -o fails in a moment
    for name in args.input:
        if args.output is not None and name != "-" and _same_file(name, args.output):
            raise TableError(f"the output {args.output} is the input: write the results elsewhere")
    structures = structure_files(args.input)
    if structures is not None:
        with ExitStack() as stack:
            backend = stack.enter_context(_backend(args))
            sink = _sink(stack, args.output)
            progress = stack.enter_context(
                tqdm(
                    total=len(structures),
                    unit=" files",
                    disable=args.quiet or not sys.stderr.isatty(),
                    file=sys.stderr,
                )
            )
            screen_structures(
                structures,
                sink,
                backend,
                progress,
                summary,
                escape_formulas=args.escape_formulas,
            )
        return
    (name,) = args.input
    with ExitStack() as stack:
        # strict: an unterminated quote is an error, not a cell swallowing the rest of the file.
        reader = csv.DictReader(stack.enter_context(_open_input(name)), strict=True)
        # The header is checked before the model loads: a wrong file fails in a moment.
        try:
            header = reader.fieldnames
        except csv.Error as exc:
            raise TableError(f"the input's header is not readable CSV: {exc}") from exc
        columns = plan_columns(header, args.formula_column, args.density_column)
        backend = stack.enter_context(_backend(args))
        sink = _sink(stack, args.output)
        # A bar only on a terminal; only then is the input read once more to count its rows.
        show_progress = not args.quiet and sys.stderr.isatty()
        progress = stack.enter_context(
            tqdm(
                total=_count_rows(name) if show_progress else None,
                unit=" rows",
                disable=not show_progress,
                file=sys.stderr,
            )
        )
        try:
            screen(
                reader,
                columns,
                sink,
                backend,
                progress,
                summary,
                escape_formulas=args.escape_formulas,
            )
        except csv.Error as exc:
            raise TableError(
                # line_num counts the lines of the records read whole; this one starts after.
                f"the input is not readable CSV in the record starting at line "
                f"{reader.line_num + 1}: {exc}"
            ) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit status: 0 when every row was predicted, 1 when some failed, 2 on an error
        that stopped the run.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="magorder: %(message)s")
    from app.core.errors import MagorderError

    try:
        return _predict(args)
    except BrokenPipeError:
        # The reader went away (`magorder predict big.csv | head`): stop without a word, and
        # keep Python from complaining again when it flushes standard output at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (
        OSError,
        UnicodeDecodeError,
        TableError,
        OutputError,
        BackendError,
        MagorderError,
    ) as exc:
        print(f"magorder: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        # A failure nobody foresaw (a bug, a parser raising what it should not): one line, as
        # for any other error, not a traceback. An -o file was left as it was on the way out.
        print(
            f"magorder: error: the run stopped on an unexpected {type(exc).__name__}: {exc} "
            "(please report it)",
            file=sys.stderr,
        )
        return EXIT_ERROR
