"""``POST /predict/table``: a CSV (or structure files) in, the CSV ``magorder predict`` writes out.

The rows go through the command line's own screening code with the loaded model, so the
answer is byte for byte what ``magorder predict`` writes; it is streamed chunk by chunk, so a
client (the web page) sees rows arrive and can show how far a large file has got.
"""

from __future__ import annotations

import csv
import io
import queue
import threading
from collections.abc import AsyncIterator, Callable
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


class _ChunkSink(io.StringIO):
    """A text stream whose every flush hands what was written since to a queue."""

    def __init__(self, chunks: queue.Queue[object]) -> None:
        super().__init__()
        self._chunks = chunks

    def flush(self) -> None:
        """Queue what was written since the last flush."""
        written = self.getvalue()
        if written:
            self._chunks.put(written)
            self.seek(0)
            self.truncate()


def _stream(run: Callable[[IO[str]], object]) -> AsyncIterator[str]:
    """Run ``run(sink)`` in a thread and yield what it flushes, as it flushes it."""
    chunks: queue.Queue[object] = queue.Queue(maxsize=8)

    def work() -> None:
        sink = _ChunkSink(chunks)
        try:
            run(sink)
            sink.flush()
        finally:
            chunks.put(_DONE)

    async def produce() -> AsyncIterator[str]:
        threading.Thread(target=work, name="magorder-table", daemon=True).start()
        while (chunk := await anyio.to_thread.run_sync(chunks.get)) is not _DONE:
            assert isinstance(chunk, str)  # noqa: S101 - only text and the end mark are queued
            yield chunk

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
        _stream(run),
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
