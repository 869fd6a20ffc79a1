"""The HTTP/1.1 protocol uvicorn runs for magorder: httptools' with bounds on what clients send.

Uvicorn's own protocol waits for a request's headers without end, reads headers of any size,
and counts idle connections against ``--limit-concurrency``, so a few hundred sockets that
send nothing shut every other client out. `GuardedHttpToolsProtocol` adds what a front-line
server has:

- a deadline for the request line and headers (`Settings.header_timeout_s`), from the moment a
  connection opens or a request's first byte arrives; past it the connection is closed, with
  a 408 when part of a request had arrived;
- a size cap on the request line and headers together (`Settings.max_header_bytes`): 431;
- a hard deadline for the whole body (`Settings.body_deadline_s`, plus a grace in which the
  app answers 408 itself), also when the app never reads it;
- a cap on open connections (`Settings.max_connections`) and, separately, on requests being
  handled at once (`Settings.max_requests_in_flight`): 503 with ``Retry-After``. Idle
  connections cost no request slot, so they cannot lock other clients out;
- the JSON error body of the API for all of these and for unreadable requests (uvicorn's
  own are plain text).

Uvicorn runs it with ``--http app.server.http_protocol:GuardedHttpToolsProtocol``.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.api.schemas import ErrorDetail, ErrorResponse
from app.config import get_settings

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
_HEAD_END = b"\r\n\r\n"
# How long past `body_deadline_s` a body may still be arriving before the connection is cut:
# within it, the app's own deadline (`BodyLimitMiddleware`) answers 408.
BODY_DEADLINE_GRACE_S = 5.0


class _RefusedHeadError(Exception):
    """Raised from a parser callback to stop parsing the rest of a refused read.

    httptools turns it into an ``HttpParserError``, which uvicorn answers with
    `GuardedHttpToolsProtocol.send_400_response`: a no-op once the 431 is sent.
    """


def _error_parts(
    status_code: int, error_type: str, message: str, retry_after_s: int | None
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = ErrorResponse(error=ErrorDetail(type=error_type, message=message)).model_dump_json(
        exclude_none=True
    )
    encoded = body.encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(encoded)),
        (b"connection", b"close"),
    ]
    if retry_after_s is not None:
        headers.append((b"retry-after", b"%d" % retry_after_s))
    return headers, encoded


def _error_bytes(
    status_code: int, error_type: str, message: str, *, retry_after_s: int | None = None
) -> bytes:
    """Render a complete HTTP/1.1 error response with the API's JSON error body.

    Args:
        status_code: One of 400, 408, 431 and 503.
        error_type: The error's machine-readable code.
        message: What went wrong.
        retry_after_s: A ``Retry-After`` to send, in seconds.

    Returns:
        The status line, headers (``Connection: close`` among them) and body.
    """
    headers, body = _error_parts(status_code, error_type, message, retry_after_s)
    lines = [b"HTTP/1.1 %d %s" % (status_code, _REASONS[status_code])]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + _HEAD_END + body


@cache
def _busy_app(limit: int | None) -> Any:
    """An ASGI app answering 503 for a request over the in-flight limit."""
    most = f"{limit} requests, its most" if limit else "as many requests as it may"
    headers, body = _error_parts(
        503, "server_busy", f"the server is handling {most}; retry shortly", 1
    )

    async def busy(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return busy


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with deadlines, size caps and JSON errors (see module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = get_settings()  # read once per process
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._head_pending = True  # between requests or inside a request's line and headers
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept a connection, or refuse it with 503 when too many are open."""
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            message = (
                f"the server holds {self._limits.max_connections} open connections, its most; "
                "retry shortly"
            )
            self._refuse(503, "server_busy", message, retry_after_s=1)
            return
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget a closed connection and its timers."""
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse what arrived, refusing request heads over the size cap before parsing them."""
        if self._refused:
            return
        if self._head_pending:
            end = data.find(_HEAD_END)
            size = self._head_bytes + (len(data) if end < 0 else end + len(_HEAD_END))
            if size > self._limits.max_header_bytes:
                self._refuse_large_head()
                return
            self._head_bytes = size
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        """Answer an unparseable request with the API's JSON error body."""
        self._refuse(400, "bad_request", "the request could not be read as HTTP/1.1")

    def on_message_begin(self) -> None:
        """Start a request: its line and headers are due within the header timeout."""
        super().on_message_begin()
        self._head_pending = True
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        """Check the head's size, start the request's body deadline, then hand it to the app."""
        # A head that arrived in one read with the request before it escaped the count in
        # `data_received`: measured here, once parsed.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._limits.max_header_bytes:
            self._refuse_large_head()
            raise _RefusedHeadError
        self._head_pending = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_timer = self.loop.call_later(
            self._limits.body_deadline_s + BODY_DEADLINE_GRACE_S, self._body_timed_out
        )
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """End a request's body: what follows is the next request's head."""
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._head_pending = True
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        limit = self._limits.max_requests_in_flight
        if app is service_unavailable:  # uvicorn's own --limit-concurrency, if it is given
            app = _busy_app(None)
        elif len(self.tasks) >= limit:
            app = _busy_app(limit)
        super()._start_asgi_task(cycle, app)

    def _refuse_large_head(self) -> None:
        message = f"request line and headers are larger than {self._limits.max_header_bytes} bytes"
        self._refuse(431, "headers_too_large", message)

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing of a request has arrived: nothing to answer
            return
        message = (
            f"request line and headers not received within {self._limits.header_timeout_s:g} s"
        )
        self._refuse(408, "request_timeout", message)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            message = f"request body not all received within {self._limits.body_deadline_s:g} s"
            self._refuse(408, "request_timeout", message, of_current_request=True)
        else:
            self.transport.close()

    def _refuse(
        self,
        status_code: int,
        error_type: str,
        message: str,
        retry_after_s: int | None = None,
        *,
        of_current_request: bool = False,
    ) -> None:
        """Answer with an error and close; once per connection.

        A refusal of a pipelined request whose predecessor is still owed its response only
        closes the connection: written now, it would land in (or be read as) that response.
        """
        if self._refused:
            return
        self._refused = True
        prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        self.logger.warning("%s%d %s", prefix, status_code, message)
        self._cancel_timers()
        owed = self.cycle is not None and not self.cycle.response_complete
        if self.cycle is not None:
            # The app's task, if one runs, sees a disconnect and sends nothing more.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if of_current_request or not owed:
            self.transport.write(
                _error_bytes(status_code, error_type, message, retry_after_s=retry_after_s)
            )
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
