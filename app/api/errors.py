"""Turning domain and validation errors into uniform JSON error responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.json_body import RequestBodyError
from app.core.errors import (
    BatchTooLargeError,
    InvalidCompoundError,
    MagorderError,
    ModelLoadError,
    ModelNotReadyError,
    ServiceBusyError,
    StructureTooLargeError,
    StructureWorkersError,
)
from app.core.results import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)

_DOMAIN_STATUS: tuple[tuple[type[MagorderError], int], ...] = (
    (StructureTooLargeError, status.HTTP_413_CONTENT_TOO_LARGE),
    (InvalidCompoundError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (BatchTooLargeError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ServiceBusyError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (StructureWorkersError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ModelNotReadyError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ModelLoadError, status.HTTP_503_SERVICE_UNAVAILABLE),
)


def _describe_location(loc: Sequence[int | str], root: str) -> str:
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    return ".".join(str(part) for part in parts) or root


_OBJECT_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type"})


def _json_type(value: Any) -> str:
    if isinstance(value, bool):  # before numbers: a bool is an int in Python
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else "null"


def _error_message(error: Mapping[str, Any]) -> str:
    """Pydantic's message, with the Python class it names put in JSON terms."""
    if error["type"] in _OBJECT_ERRORS:
        return f"should be a JSON object, got {_json_type(error.get('input'))}"
    if error["type"] == "list_type":
        return f"should be a JSON array, got {_json_type(error.get('input'))}"
    if error["type"] == "string_unicode":  # JSON can spell "\ud800", which UTF-8 cannot
        return "holds a lone surrogate escape (\\ud800-\\udfff), which is not valid Unicode text"
    return str(error["msg"])


def _describe_problem(error: Mapping[str, Any], root: str) -> str:
    if error["type"] == "json_invalid":
        reason = error.get("ctx", {}).get("error", "")
        return f"body is not valid JSON ({reason} at character {error['loc'][-1]})"
    return f"{_describe_location(error['loc'], root)}: {_error_message(error)}"


MAX_REPORTED_PROBLEMS = 5
"""Most validation problems one error response describes; it counts the others."""


def validation_error_detail(
    errors: Sequence[Mapping[str, Any]], *, root: str = "body"
) -> ErrorDetail:
    """Summarise pydantic validation errors as one error detail.

    Args:
        errors: The ``errors()`` of a pydantic or FastAPI validation error.
        root: What to call the validated value itself in messages.

    Returns:
        A detail whose message names each of the first `MAX_REPORTED_PROBLEMS` problems and
        its field, and counts the rest.
    """
    fields = {_describe_location(e["loc"], root) for e in errors if e["type"] != "json_invalid"}
    # A body can carry thousands of problems (unknown keys): report the first few and a count,
    # so that an error response never outgrows the request by much.
    shown = list(errors[:MAX_REPORTED_PROBLEMS])
    rest = len(errors) - len(shown)
    message = "; ".join(_describe_problem(e, root) for e in shown)
    if rest:
        message += f"; and {rest} more problem{'s' if rest > 1 else ''}"
    return ErrorDetail(
        type="request_validation_error",
        message=message,
        field=fields.pop() if len(fields) == 1 else None,
        details=[
            {"loc": list(e["loc"]), "msg": _error_message(e), "type": e["type"]} for e in shown
        ],
    )


def error_response(
    status_code: int, detail: ErrorDetail, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Build the JSON response of an error.

    Args:
        status_code: The HTTP status.
        detail: What went wrong.
        headers: Extra response headers.

    Returns:
        A response whose body is an `ErrorResponse`.
    """
    body = ErrorResponse(error=detail).model_dump(mode="json", exclude_none=True)
    return JSONResponse(status_code=status_code, content=body, headers=headers)


async def _handle_domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MagorderError)  # noqa: S101 - registered for this type only
    code = next(
        (code for kind, code in _DOMAIN_STATUS if isinstance(exc, kind)),
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ServiceBusyError) else None
    return error_response(code, ErrorDetail.from_error(exc), headers=headers)


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    return error_response(
        status.HTTP_422_UNPROCESSABLE_CONTENT, validation_error_detail(exc.errors())
    )


async def _handle_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    if isinstance(exc, RequestBodyError):
        detail = ErrorDetail(type=exc.error_type, message=str(exc.detail), field=exc.field)
    else:
        detail = ErrorDetail(type="http_error", message=str(exc.detail))
    return error_response(exc.status_code, detail, headers=exc.headers)


async def _handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    detail = ErrorDetail(type="internal_error", message="internal server error")
    return error_response(status.HTTP_500_INTERNAL_SERVER_ERROR, detail)


def register_error_handlers(app: FastAPI) -> None:
    """Make every error the app returns a JSON `ErrorResponse`.

    Args:
        app: The application to register the handlers on.
    """
    app.add_exception_handler(MagorderError, _handle_domain_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(Exception, _handle_unexpected_error)
