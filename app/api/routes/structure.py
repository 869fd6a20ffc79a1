"""Structure endpoints: a crystal structure (CIF, POSCAR, ...) in, as JSON or as a file upload.

Each takes ``application/json`` (``{"structure": "...", "format": "cif"}``) or
``multipart/form-data`` (``curl -F file=@Fe2O3.cif``). pymatgen reads each structure in one
of the service's worker processes (`app.core.structure_workers`), after the core's strict
checks of what it would read, so a large or malicious file never holds the server's process.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.api.batch import predict_items
from app.api.dependencies import ServiceDep
from app.api.json_body import RequestBodyError, check_content_type, parse_json_body
from app.api.routes.predict import ERROR_RESPONSES, SERVER_TIMING, server_timing
from app.api.schemas import StructureBatchIn, StructureBatchItemIn, StructureIn
from app.core.batch import MAX_ID_LENGTH, CompoundQuery, QueryFailure, predict_queries
from app.core.errors import BatchTooLargeError
from app.core.results import BatchOut, StructureOut, StructurePredictionOut
from app.core.structures import StructureFormat, format_of_filename
from app.core.timing import StageTimer

router = APIRouter(tags=["prediction"])

_FORMATS = [f.value for f in StructureFormat]
_UPLOAD_FORMAT = {
    "type": "string",
    "enum": _FORMATS,
    "description": "The files' format; from each file's name (.cif, POSCAR, .vasp, .json, "
    ".xsf), else from its content, when omitted.",
}


def _body(json_schema: dict[str, Any], upload: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json_schema},
                "multipart/form-data": {"schema": upload},
            },
        }
    }


_SINGLE_BODY = _body(
    StructureIn.model_json_schema(),
    {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "format": _UPLOAD_FORMAT,
        },
        "required": ["file"],
    },
)
_BATCH_BODY = _body(
    StructureBatchIn.model_json_schema(),
    {
        "type": "object",
        "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "format": _UPLOAD_FORMAT,
        },
        "required": ["files"],
    },
)


def _is_multipart(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


def _validated(model: type[StructureIn | StructureBatchIn], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _upload_format(value: Any) -> StructureFormat | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.lower() not in _FORMATS:
        raise RequestBodyError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "invalid_structure",
            f"format must be one of {', '.join(_FORMATS)}, got {value!r}",
            field="format",
        )
    return StructureFormat(value.lower())


async def _uploads(request: Request, field: str, max_files: int) -> list[dict[str, Any]]:
    """The uploaded files of a multipart body, as structure items named by their file names."""
    try:
        form = await request.form(max_files=max_files, max_fields=10)
    except Exception as exc:  # Starlette raises its own MultiPartException for bad bodies
        raise RequestBodyError(
            status.HTTP_400_BAD_REQUEST, "invalid_multipart", f"multipart body unreadable: {exc}"
        ) from exc
    try:
        chosen = _upload_format(form.get("format"))
        files = [value for value in form.getlist(field) if isinstance(value, UploadFile)]
        if not files:
            raise RequestBodyError(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "missing_file",
                f"no file in the form's {field!r} field; upload one with "
                f"curl -F {field}=@structure.cif",
                field=field,
            )
        items: list[dict[str, Any]] = []
        for upload in files:
            name = upload.filename or f"{field}{len(items)}"
            raw = await upload.read()
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise RequestBodyError(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    "invalid_structure",
                    f"file {name!r} is not UTF-8 text: a structure file (CIF, POSCAR, ...) is text",
                    field=field,
                ) from None
            fmt = chosen or format_of_filename(name)
            items.append({"structure": text, "format": fmt, "id": name[:MAX_ID_LENGTH]})
        return items
    finally:
        await form.close()


async def _json(request: Request) -> Any:
    content_type = request.headers.get("content-type")
    try:
        check_content_type(content_type, request.headers.get("content-encoding"))
    except RequestBodyError as exc:
        if not str(exc.detail).startswith("Content-Type must be"):
            raise  # an encoding or a charset: its own message says what to change
        got = repr(content_type) if content_type else "none"
        raise RequestBodyError(
            exc.status_code,
            exc.error_type,
            f"Content-Type must be application/json or multipart/form-data, got {got}: send "
            'the structure as JSON ({"structure": "..."}, e.g. with curl --json) or upload '
            "its file (curl -F file=@structure.cif)",
            field=exc.field,
        ) from None
    try:
        return parse_json_body(await request.body())
    except json.JSONDecodeError as exc:
        # As FastAPI reports a body that is not JSON on its own routes.
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from None


@router.post(
    "/predict/structure",
    responses=ERROR_RESPONSES,
    openapi_extra=_SINGLE_BODY,
    response_model_exclude_none=True,
)
async def predict_structure(request: Request, service: ServiceDep) -> StructurePredictionOut:
    """Predict the magnetic ordering of a crystal structure's compound.

    The composition and density come from the structure (pymatgen). Send it as JSON
    (`{"structure": "...", "format": "cif"}`, format detected when omitted) or upload the file
    (`curl -F file=@Fe2O3.cif`). A disordered structure is predicted for its average,
    fractional composition, with a warning.
    """
    if _is_multipart(request):
        (item,) = await _uploads(request, "file", max_files=1)
        query = CompoundQuery(structure=item["structure"], structure_format=item["format"])
    else:
        body = _validated(StructureIn, await _json(request))
        query = CompoundQuery(structure=body.structure, structure_format=body.structure_format)
    predictor = service.predictor
    (result,) = await run_in_threadpool(
        partial(predict_queries, structures=service.structures),
        [query],
        predictor,
        service.settings.batch_limits,
    )
    if isinstance(result, QueryFailure):
        raise result.error
    assert result.structure is not None  # noqa: S101 - a structure query
    return StructurePredictionOut.from_prediction(
        result.prediction,
        predictor.metadata.model_version,
        predictor.experiment_version,
        structure=StructureOut.from_parsed(result.structure),
    )


@router.post(
    "/predict/structure/batch",
    responses=ERROR_RESPONSES,
    openapi_extra=_BATCH_BODY,
    response_model_exclude_none=True,
)
async def predict_structure_batch(
    request: Request, service: ServiceDep, response: Response
) -> BatchOut:
    """Predict many crystal structures; a bad one gets its own error, not the batch.

    JSON (`{"items": [{"structure": "...", "format": "cif", "id": "a"}]}`) or an upload of
    several files (`curl -F files=@a.cif -F files=@b.cif`), each result carrying its file's
    name as `id`.
    """
    settings = service.settings
    if _is_multipart(request):
        items = await _uploads(request, "files", max_files=settings.max_batch_size + 1)
    else:
        items = _validated(StructureBatchIn, await _json(request)).items
    if len(items) > settings.max_batch_size:
        raise BatchTooLargeError(
            f"batch has {len(items)} items; at most {settings.max_batch_size} allowed"
        )
    timer = StageTimer()
    out = await run_in_threadpool(
        predict_items,
        items,
        service.predictor,
        settings.batch_limits,
        timer,
        structures=service.structures,
        schema=StructureBatchItemIn,
    )
    response.headers[SERVER_TIMING] = server_timing(timer)
    return out
