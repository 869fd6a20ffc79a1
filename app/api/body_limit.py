"""ASGI middleware bounding how large and how slow a request body may be."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.api.schemas import ErrorDetail

# Every early refusal closes its connection: the rest of the body is never read, and a client
# left connected would hold one of the server's connection slots for as long as it likes.
_CLOSE = {"Connection": "close"}


def _too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


class BodyLimitMiddleware:
    """Refuse request bodies over a size, and clients that stall while sending one.

    A declared ``Content-Length`` over the limit is answered 413 before anything is read. A
    body that turns out larger while streaming, or whose next chunk takes longer than the
    timeout, fails the request with 413 or 408 as soon as that happens, so an oversized or
    slow client never holds more than ``max_bytes`` of memory or a worker thread.

    Args:
        app: The application to protect.
        max_bytes: Largest body accepted.
        timeout_s: Longest wait for each chunk of the body.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI scope, bounding the body of HTTP requests."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self._max_bytes:
            detail = ErrorDetail(type="http_error", message=_too_large(self._max_bytes))
            response = error_response(status.HTTP_413_CONTENT_TOO_LARGE, detail, headers=_CLOSE)
            await response(scope, receive, send)
            return

        received = 0
        body_done = False

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls wait for a disconnect: no deadline applies
                return await receive()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps every receive in a new task.
                async with asyncio.timeout(self._timeout_s):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    status.HTTP_408_REQUEST_TIMEOUT,
                    f"request body not received within {self._timeout_s:g} s",
                    headers=_CLOSE,
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        _too_large(self._max_bytes),
                        headers=_CLOSE,
                    )
                body_done = not message.get("more_body", False)
            return message

        await self._app(scope, bounded_receive, send)
