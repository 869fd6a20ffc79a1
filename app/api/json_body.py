"""Reading request bodies as JSON strictly: the right content type, UTF-8, no repeated keys.

FastAPI alone reads a body sent with another content type as bytes ("Input should be a valid
dictionary"), calls any undecodable body "an error parsing the body", and lets the last of two
equal keys win silently. `JSONBodyRoute` answers each case with an error that names it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute

_GZIP_MAGIC = b"\x1f\x8b"
# What clients send almost always: accepted without parsing the header (a few µs).
_PLAIN_JSON = frozenset(
    {"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"}
)


class RequestBodyError(HTTPException):
    """A request body the API cannot read, with a stable error code.

    Args:
        status_code: The HTTP status to answer.
        error_type: The error's machine-readable code.
        message: What is wrong, in the client's terms.
        field: The input field at fault, if one.
    """

    def __init__(
        self, status_code: int, error_type: str, message: str, field: str | None = None
    ) -> None:
        super().__init__(status_code, message)
        self.error_type = error_type
        self.field = field


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return obj


def check_content_type(content_type: str | None, content_encoding: str | None) -> None:
    """Refuse a body that is not declared as uncompressed UTF-8 JSON.

    Args:
        content_type: The request's ``Content-Type`` header, if any.
        content_encoding: The request's ``Content-Encoding`` header, if any.

    Raises:
        RequestBodyError: 415 naming the header at fault.
    """
    if content_encoding is None and content_type and content_type.lower() in _PLAIN_JSON:
        return
    if content_encoding and content_encoding.strip().lower() != "identity":
        raise RequestBodyError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            f"Content-Encoding {content_encoding!r} is not supported; send the JSON body "
            "uncompressed",
            field="Content-Encoding",
        )
    message = Message()
    message["content-type"] = content_type or ""
    subtype = message.get_content_subtype()
    is_json = message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
    if not content_type or not is_json:
        got = repr(content_type) if content_type else "none"
        raise RequestBodyError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {got}; with curl, send the body with "
            "--json or add -H 'Content-Type: application/json'",
            field="Content-Type",
        )
    charset = message.get_content_charset()
    if charset not in (None, "utf-8", "utf8"):
        raise RequestBodyError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            f"Content-Type charset {charset!r} is not supported; send the body as UTF-8",
            field="Content-Type",
        )


def parse_json_body(body: bytes) -> Any:
    """Decode a request body as UTF-8 JSON whose objects have no repeated keys.

    Args:
        body: The raw body.

    Returns:
        The decoded JSON value.

    Raises:
        RequestBodyError: 400 when the body is not UTF-8; 422 when an object repeats a key,
            the nesting is too deep for Python's parser, or an integer is too long for it.
        json.JSONDecodeError: The text is not JSON; FastAPI reports where.
    """
    try:
        # utf-8-sig: a byte-order mark is allowed to lead (RFC 8259 lets parsers ignore it).
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        gzipped = body[:2] == _GZIP_MAGIC
        hint = " (it looks gzip-compressed; send it uncompressed)" if gzipped else ""
        raise RequestBodyError(
            status.HTTP_400_BAD_REQUEST,
            "invalid_encoding",
            f"request body is not UTF-8 JSON: byte 0x{body[exc.start]:02x} at position "
            f"{exc.start} is not UTF-8{hint}",
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys_object)
    except RecursionError:
        raise RequestBodyError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "json_too_deep",
            "JSON body is nested too deeply to read; a request needs three levels at most",
        ) from None
    except _DuplicateKeyError as exc:
        raise RequestBodyError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "duplicate_key",
            f"key {exc.key!r} appears more than once in one JSON object; send each key once",
            field=exc.key,
        ) from None
    except json.JSONDecodeError:
        raise
    except ValueError:
        # Python refuses to read integers of more than sys.get_int_max_str_digits() digits.
        raise RequestBodyError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "number_too_long",
            f"a number in the body has more than {sys.get_int_max_str_digits()} digits, which "
            "no input needs",
        ) from None


class _JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class JSONBodyRoute(APIRoute):
    """A route whose body, if it takes one, must be strict UTF-8 JSON (see the module)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler so that the body is checked and decoded strictly."""
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle

        async def handle_json(request: Request) -> Response:
            headers = request.headers
            check_content_type(headers.get("content-type"), headers.get("content-encoding"))
            return await handle(_JSONRequest(request.scope, request.receive))

        return handle_json
