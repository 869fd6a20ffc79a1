"""ASGI middleware bounding how large and how slow a request body may be."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.core.results import ErrorDetail

# Every early refusal closes its connection: the rest of the body is never read, and a client
# left connected would hold one of the server's connection slots for as long as it likes.
_CLOSE = {"Connection": "close"}


def _too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


class BodyLimitMiddleware:
    """Refuse request bodies over a size, and clients that stall or trickle while sending one.

    A declared ``Content-Length`` over the limit is answered 413 before anything is read. A
    body that turns out larger while streaming, whose next chunk takes longer than the
    timeout, or that is not all there by the deadline, fails the request with 413 or 408 as
    soon as that happens, so an oversized or slow client never holds more than ``max_bytes``
    of memory, or a worker thread for longer than the deadline.

    Args:
        app: The application to protect.
        max_bytes: Largest body accepted.
        timeout_s: Longest wait for each chunk of the body.
        deadline_s: Longest time for the whole body, from when the request is handed over.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, timeout_s: float, deadline_s: float
    ) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls wait for a disconnect: no deadline applies
                return await receive()
            chunk_due = loop.time() + self._timeout_s
            try:
                # asyncio.timeout, not wait_for: wait_for wraps every receive in a new task.
                async with asyncio.timeout_at(min(chunk_due, deadline)):
                    message = await receive()
            except TimeoutError:
                if chunk_due <= deadline:
                    reason = f"request body not received within {self._timeout_s:g} s"
                else:
                    reason = f"request body not all received within {self._deadline_s:g} s"
                raise HTTPException(
                    status.HTTP_408_REQUEST_TIMEOUT, reason, headers=_CLOSE
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
