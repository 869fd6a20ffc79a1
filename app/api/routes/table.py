"""``POST /predict/table``: a CSV (or structure files) in, the CSV ``magorder predict`` writes out.

The rows go through the core's screening (`app.core.screening`, which the command line runs
too) with the loaded model, so the answer is byte for byte what ``magorder predict`` writes;
it is streamed chunk by chunk, so a client (the web page) sees rows arrive and can show how
far a large file has got.

Limits: at most ``max_table_rows`` rows of one CSV (422 beyond, before any is screened), and at
most ``max_table_streams`` screenings at once, each on a thread of a pool of that size (503
``server_busy`` with ``Retry-After`` beyond). A screening that fails for an unexpected reason
after the answer has begun ends the CSV with a row whose ``error`` begins
`STOPPED_PREFIX`, and nothing after it: a client can tell a cut answer from a whole one.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import IO, Any

import anyio
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from app.api.dependencies import Service, ServiceDep
from app.api.json_body import RequestBodyError
from app.api.routes.predict import ERROR_RESPONSES
from app.core.backend import BackendError, LocalBackend
from app.core.batch import CompoundQuery
from app.core.columns import ADDED_COLUMNS
from app.core.errors import MagorderError
from app.core.screening import STRUCTURE_COLUMNS, screen, screen_structures
from app.core.structures import format_of_filename
from app.core.table import Columns, TableError, plan_columns

router = APIRouter(tags=["prediction"])

_DONE = object()
_HAND_OVER_WAIT_S = 0.5
STOPPED_PREFIX = "screening stopped:"
"""How the ``error`` cell of the row that ends a cut-short screening begins."""

logger = logging.getLogger(__name__)


class _ReaderGoneError(Exception):
    """The client went away: nobody reads the chunks any more."""


class _DaemonPool:
    """At most ``size`` daemon threads running the jobs submitted, started as needed.

    Not a ``ThreadPoolExecutor``: its threads are joined when Python exits, so a screening
    waiting on a client at shutdown would hold the server's exit up.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a pool thread (a new one while fewer than ``size`` run)."""
        self._jobs.put(job)
        with self._lock:
            if self._threads >= self._size:
                return
            self._threads += 1
            name = f"magorder-table-{self._threads}"
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:  # the thread must outlive a job, or the pool would shrink
                logger.exception("a table screening job failed")


class ScreeningSlot:
    """One screening's place in a `TableStreams` pool, given back once, however it ends.

    Args:
        pool: The threads screenings run on.
        free: The pool's free places; one is held for this screening.

    Attributes:
        gone: Set once nobody will read the screening's output; it then stops at its next
            hand-over.
    """

    def __init__(self, pool: _DaemonPool, free: threading.BoundedSemaphore) -> None:
        self._pool = pool
        self._free = free
        self._lock = threading.Lock()
        self._started = False
        self._released = False
        self.gone = threading.Event()

    def start(self, work: Callable[[], None]) -> None:
        """Run ``work`` on a pool thread; the place is given back when it returns."""

        def run() -> None:
            try:
                work()
            finally:
                self.release()

        with self._lock:
            self._started = True
        self._pool.submit(run)

    def release(self) -> None:
        """Give the place back (once; later calls do nothing)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._free.release()

    def abandon(self) -> None:
        """Nobody reads the output any more: stop the screening, and free its place.

        A started screening frees its place when its thread stops (at its next hand-over);
        one that never started frees it now.
        """
        self.gone.set()
        with self._lock:
            started = self._started
        if not started:
            self.release()


class TableStreams:
    """The screenings of ``POST /predict/table`` under way: a bounded pool of threads.

    Args:
        most: Most screenings at once (``max_table_streams``).
    """

    def __init__(self, most: int) -> None:
        self.most = most
        self._free = threading.BoundedSemaphore(most)
        # As many threads as places: a claimed place never waits for a thread.
        self._pool = _DaemonPool(most)

    def claim(self) -> ScreeningSlot:
        """Hold a place for one screening.

        Raises:
            RequestBodyError: Every place is taken (503 ``server_busy``, ``Retry-After: 1``).
        """
        if not self._free.acquire(blocking=False):
            busy = RequestBodyError(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "server_busy",
                f"the server is screening {self.most} tables, its most at once; retry shortly",
            )
            busy.headers = {"Retry-After": "1"}
            raise busy
        return ScreeningSlot(self._pool, self._free)


def table_streams(app: FastAPI, most: int) -> TableStreams:
    """The app's pool of screenings, made on first use.

    Args:
        app: The application.
        most: Most screenings at once, for a pool made now.

    Returns:
        The pool every request of the app shares.
    """
    # No await between the look-up and the store: requests on the event loop cannot race.
    streams: TableStreams | None = getattr(app.state, "table_streams", None)
    if streams is None:
        streams = TableStreams(most)
        app.state.table_streams = streams
    return streams


class _ChunkSink(io.StringIO):
    """A text stream whose every flush hands what was written since to a bounded queue.

    Args:
        chunks: Where the chunks go (bounded: a slow client holds back the screening).
        abandoned: Set once nobody reads the queue; a hand-over then gives up.
    """

    def __init__(self, chunks: queue.Queue[object], abandoned: threading.Event) -> None:
        super().__init__()
        self._chunks = chunks
        self._abandoned = abandoned

    def hand_over(self, item: object) -> None:
        """Queue an item, waiting for room; raise `_ReaderGoneError` if the reader is gone."""
        while True:
            try:
                self._chunks.put(item, timeout=_HAND_OVER_WAIT_S)
                return
            except queue.Full:
                if self._abandoned.is_set():
                    raise _ReaderGoneError from None

    def flush(self) -> None:
        """Queue what was written since the last flush."""
        written = self.getvalue()
        if written:
            self.hand_over(written)
            self.seek(0)
            self.truncate()


def _stopped_reason(exc: Exception) -> str:
    if isinstance(exc, MagorderError | BackendError):
        return str(exc)
    return "an internal error (the server's log has it)"


def stopped_row(width: int, reason: str) -> str:
    """The CSV row that ends a screening cut short: empty cells, then ``error`` saying why.

    Args:
        width: The output's number of columns (``error`` is the last).
        reason: Why the screening stopped.

    Returns:
        One CSV line.
    """
    line = io.StringIO()
    message = f"{STOPPED_PREFIX} {reason}; the rows above are all that were screened"
    csv.writer(line, lineterminator="\n").writerow([*([""] * (width - 1)), message])
    return line.getvalue()


def stream_flushes(
    run: Callable[[IO[str]], object], slot: ScreeningSlot, width: int
) -> AsyncGenerator[str, None]:
    """Run ``run(sink)`` on the slot's pool thread and yield what it flushes, as it flushes it.

    A client that goes away mid-stream closes the iterator; the thread then stops at its next
    flush instead of waiting for a reader for ever. A ``run`` that raises ends the stream with
    `stopped_row` after what it had written, and the stream then ends as a whole one does.

    Args:
        run: Writes the CSV to the sink it is given, flushing chunk by chunk.
        slot: The place held for this screening; given back when the thread is done.
        width: The output's number of columns, for the row a failure ends it with.
    """
    chunks: queue.Queue[object] = queue.Queue(maxsize=8)
    abandoned = slot.gone

    def work() -> None:
        sink = _ChunkSink(chunks, abandoned)
        try:
            try:
                run(sink)
            except _ReaderGoneError:
                return
            except Exception as exc:
                logger.exception("screening an uploaded table failed")
                # After a 200 and some rows, only the body can say the answer is cut short.
                sink.write(stopped_row(width, _stopped_reason(exc)))
            sink.flush()
            sink.hand_over(_DONE)
        except _ReaderGoneError:
            return

    async def produce() -> AsyncGenerator[str, None]:
        slot.start(work)
        try:
            while (item := await anyio.to_thread.run_sync(chunks.get)) is not _DONE:
                assert isinstance(item, str)  # noqa: S101 - text or the end mark
                yield item
        finally:
            slot.abandon()

    return produce()


class _TableResponse(StreamingResponse):
    """A streamed screening that gives its pool place back even if it never starts."""

    def __init__(self, content: AsyncGenerator[str, None], slot: ScreeningSlot, name: str) -> None:
        super().__init__(
            content,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
        self._slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However the response ended (even before its body began, when the screening
            # never started), nobody reads the screening now.
            self._slot.abandon()


@dataclass(frozen=True, slots=True)
class _Screening:
    """What a request screens: the run writing the CSV, its width and the download's name."""

    run: Callable[[IO[str]], object]
    width: int
    name: str


def _refused(message: str, field: str = "file") -> RequestBodyError:
    return RequestBodyError(
        status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid_table", message, field=field
    )


def _text(upload: UploadFile, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _refused(f"file {upload.filename!r} is not UTF-8 text") from None


def _read_csv(text: str, most: int) -> tuple[list[dict[str, str]], Columns]:
    """Check the CSV whole (header, columns, every record, the row cap) and read its rows.

    Run on a worker thread: a megabyte of CSV takes about half a second to parse.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = plan_columns(reader.fieldnames)
        # One row past the cap is enough to refuse: a huge file is not read whole.
        rows = list(itertools.islice(reader, most + 1))
    except TableError as exc:
        raise _refused(str(exc)) from None
    except csv.Error as exc:
        raise _refused(
            f"the file is not readable CSV in the record starting at line "
            f"{reader.line_num + 1}: {exc}"
        ) from None
    if len(rows) > most:
        raise RequestBodyError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "too_many_rows",
            f"the file has more than {most} rows, the most one upload may screen; split it, "
            "or screen it with the magorder predict command",
            field="file",
        )
    return rows, columns


def _csv_screening(rows: list[dict[str, str]], columns: Columns, service: Service) -> _Screening:
    backend = _backend(service)
    return _Screening(
        lambda sink: screen(rows, columns, sink, backend), len(columns.output), "screened.csv"
    )


def _backend(service: Service) -> LocalBackend:
    return service.settings.local_backend(service.predictor, structures=service.structures)


@router.post(
    "/predict/table",
    responses={
        **ERROR_RESPONSES,
        503: {
            "model": ERROR_RESPONSES[503]["model"],
            "description": "No model is loaded, or the server is screening as many tables as "
            "it may at once (`server_busy`, with `Retry-After`).",
        },
        200: {"content": {"text/csv": {}}, "description": "The rows with their predictions."},
    },
    response_class=StreamingResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            },
                        },
                    }
                }
            },
        }
    },
)
async def predict_table(request: Request, service: ServiceDep) -> StreamingResponse:
    """Predict an uploaded CSV (`file`) or structure files (`files`) as `magorder predict` does.

    The answer is the CSV the command writes: every input column, then the prediction
    columns (or, for structures, one row per file); a row that cannot be predicted has its
    `error`. It is streamed as the rows are predicted. Text cells a spreadsheet would run as
    formulas (`=`, `+`, `-`, `@` first) get a leading `'`.

    At most `max_table_rows` rows of one CSV (422 `too_many_rows` beyond) and
    `max_table_streams` screenings at once (503 `server_busy`, `Retry-After: 1`, beyond). A
    screening that fails once the answer has begun ends with a row whose `error` begins
    `screening stopped:`.
    """
    settings = service.settings
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise RequestBodyError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "upload the table as multipart/form-data: curl -F file=@candidates.csv",
            field="Content-Type",
        )
    async with request.form(max_files=settings.max_batch_size + 1, max_fields=10) as form:
        uploads = [
            u for u in form.getlist("file") + form.getlist("files") if isinstance(u, UploadFile)
        ]
        if not uploads:
            raise _refused("no file in the form: upload a CSV as file=@candidates.csv")
        texts = [(u.filename or "", _text(u, await u.read())) for u in uploads]
    structures = [name for name, _ in texts if format_of_filename(name) is not None]
    if len(structures) == len(texts) and len(texts) > settings.max_batch_size:
        raise _refused(f"{len(texts)} files; at most {settings.max_batch_size} allowed")
    if not (len(texts) == 1 and not structures) and len(structures) != len(texts):
        raise _refused(
            "upload one CSV, or structure files (.cif, POSCAR, .vasp, .json, .xsf), not both"
        )
    # Claimed before the CSV is parsed: parsing is work too, and the cap bounds all of it.
    slot = table_streams(request.app, settings.max_table_streams).claim()
    try:
        if structures:
            screening = _structures_screening(texts, service)
        else:
            rows, columns = await anyio.to_thread.run_sync(
                _read_csv, texts[0][1], settings.max_table_rows
            )
            screening = _csv_screening(rows, columns, service)
    except BaseException:
        slot.release()
        raise
    return _TableResponse(
        stream_flushes(screening.run, slot, screening.width), slot, screening.name
    )


def _structures_screening(texts: list[tuple[str, str]], service: Service) -> _Screening:
    """Screen uploaded structure files by position: two uploads may share a name."""
    names = [name for name, _ in texts]
    backend = _backend(service)

    def read(index: int) -> CompoundQuery:
        name, text = texts[index]
        return CompoundQuery(structure=text, structure_format=format_of_filename(name), id=name)

    return _Screening(
        lambda sink: screen_structures(names, sink, backend, read=read),
        len(STRUCTURE_COLUMNS) + len(ADDED_COLUMNS),
        "structures.csv",
    )
