"""``POST /predict/table``: a CSV (or structure files) in, the CSV ``magorder predict`` writes out.

The rows go through the command line's own screening code with the loaded model, so the
answer is byte for byte what ``magorder predict`` writes; it is streamed chunk by chunk, so a
client (the web page) sees rows arrive and can show how far a large file has got.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import IO, Any

import anyio
from fastapi import APIRouter, Request, status
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from app.api.dependencies import Service, ServiceDep
from app.api.json_body import RequestBodyError
from app.api.routes.predict import ERROR_RESPONSES
from app.cli.screening import screen, screen_structures
from app.cli.table import TableError, plan_columns
from app.client.backends import LocalBackend
from app.core.batch import CompoundQuery
from app.core.structures import format_of_filename

router = APIRouter(tags=["prediction"])

_DONE = object()
_HAND_OVER_WAIT_S = 0.5

logger = logging.getLogger(__name__)


class _ReaderGoneError(Exception):
    """The client went away: nobody reads the chunks any more."""


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


def stream_flushes(run: Callable[[IO[str]], object]) -> AsyncGenerator[str, None]:
    """Run ``run(sink)`` in a thread and yield what it flushes, as it flushes it.

    A client that goes away mid-stream closes the iterator; the thread then stops at its next
    flush instead of waiting for a reader for ever.
    """
    chunks: queue.Queue[object] = queue.Queue(maxsize=8)
    abandoned = threading.Event()

    def work() -> None:
        sink = _ChunkSink(chunks, abandoned)
        end: object = _DONE
        try:
            run(sink)
            sink.flush()
        except _ReaderGoneError:
            return
        except Exception as exc:  # handed to the response, which can only cut the stream
            logger.exception("screening an uploaded table failed")
            end = exc
        with contextlib.suppress(_ReaderGoneError):
            sink.hand_over(end)

    async def produce() -> AsyncGenerator[str, None]:
        threading.Thread(target=work, name="magorder-table", daemon=True).start()
        try:
            while (item := await anyio.to_thread.run_sync(chunks.get)) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                assert isinstance(item, str)  # noqa: S101 - text, an error or the end mark
                yield item
        finally:
            abandoned.set()

    return produce()


def _refused(message: str, field: str = "file") -> RequestBodyError:
    return RequestBodyError(
        status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid_table", message, field=field
    )


def _text(upload: UploadFile, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _refused(f"file {upload.filename!r} is not UTF-8 text") from None


def _csv_run(text: str, service: Service) -> Callable[[IO[str]], object]:
    """Check the CSV whole (header, columns, every record), then screen it."""
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = plan_columns(reader.fieldnames)
        rows = list(reader)
    except TableError as exc:
        raise _refused(str(exc)) from None
    except csv.Error as exc:
        raise _refused(
            f"the file is not readable CSV in the record starting at line "
            f"{reader.line_num + 1}: {exc}"
        ) from None
    backend = _backend(service)
    return lambda sink: screen(rows, columns, sink, backend)


def _backend(service: Service) -> LocalBackend:
    settings = service.settings
    return LocalBackend(service.predictor, settings.batch_limits, settings.max_batch_size)


@router.post(
    "/predict/table",
    responses={
        **ERROR_RESPONSES,
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
    `error`. It is streamed as the rows are predicted.
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
    if len(texts) == 1 and not structures:
        run = _csv_run(texts[0][1], service)
        name = "screened.csv"
    elif len(structures) == len(texts):
        if len(texts) > settings.max_batch_size:
            raise _refused(f"{len(texts)} files; at most {settings.max_batch_size} allowed")
        run = _structures_run(texts, service)
        name = "structures.csv"
    else:
        raise _refused(
            "upload one CSV, or structure files (.cif, POSCAR, .vasp, .json, .xsf), not both"
        )
    return StreamingResponse(
        stream_flushes(run),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _structures_run(texts: list[tuple[str, str]], service: Service) -> Callable[[IO[str]], Any]:
    uploaded = dict(texts)
    backend = _backend(service)

    def read(path: Path) -> CompoundQuery:
        name = str(path)
        return CompoundQuery(
            structure=uploaded[name], structure_format=format_of_filename(name), id=name
        )

    return lambda sink: screen_structures([Path(n) for n, _ in texts], sink, backend, read=read)
