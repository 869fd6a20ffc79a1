"""The HTTP/1.1 protocol uvicorn runs for magorder: httptools' with bounds on what clients take.

Uvicorn's own protocol waits for a request's headers without end, reads headers of any size,
writes to a client that never reads without end, and counts idle connections against
``--limit-concurrency``, so a few hundred sockets that send nothing shut every other client
out. `GuardedHttpToolsProtocol` adds what a front-line server has:

- a deadline for the request line and headers (`Settings.header_timeout_s`), from the moment a
  connection opens or a request's first byte arrives; past it the connection is closed, with
  a 408 when part of a request had arrived;
- a size cap on the request line and headers together (`Settings.max_header_bytes`): 431;
- a hard deadline for the whole body (`Settings.body_deadline_s`, plus a grace in which the
  app answers 408 itself), also when the app never reads it;
- a write deadline (`Settings.write_timeout_s`): a response the client has stopped reading
  for that long is dropped with its connection, freeing its request slot and its buffers;
- a cap on requests being handled at once (`Settings.max_requests_in_flight`): 503 with
  ``Retry-After``. Idle connections cost no request slot, and ``GET /health`` takes none, so
  neither can lock other clients (or the health check) out;
- caps on the connections open at once, in all (`Settings.max_connections`) and from one
  client address (`Settings.max_connections_per_client`). A connection over either cap is
  not refused outright, since the health check often comes from the same address as the
  client that fills the cap (loopback, a container's gateway): it may only ask for
  ``/health`` (anything else is a 503 with ``Retry-After``), once, and gets a short deadline
  for its request head. Past twice `Settings.max_connections` a connection is refused at once;
- at shutdown, a body still arriving gets a short time to finish, then a 503, so that the
  grace period does not end in a cancelled request (a 500 and a traceback);
- the JSON error body of the API for all of these and for unreadable requests (uvicorn's
  own are plain text).

Uvicorn runs it with ``--http app.server.http_protocol:GuardedHttpToolsProtocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import struct
import weakref
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from app.config import get_settings
from app.core.results import ErrorDetail, ErrorResponse

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
# The head deadline of a connection over a connection cap: a health check sends its request
# at once, so an over-cap socket that sends nothing is let go long before `header_timeout_s`.
OVER_CAP_HEADER_TIMEOUT_S = 2.0
# Connections past this many times `max_connections` are refused at once: the last bound on
# what a flood of sockets costs, above the band in which over-cap connections may ask /health.
HARD_CONNECTION_FACTOR = 2
# How long a refused client still sending its body may go on before its connection is
# closed, so that it reads the refusal rather than a reset (nginx's `lingering_time`).
LINGER_S = 2.0
# Retry-After of the 503 a body still arriving at shutdown gets: a restart takes seconds.
SHUTDOWN_RETRY_AFTER_S = 5
_HEALTH_METHODS = frozenset({"GET", "HEAD"})
# SO_LINGER on, 0 s: closing the socket resets the connection and drops what is unsent.
_LINGER_RESET = struct.pack("ii", 1, 0)


class _RefusedHeadError(Exception):
    """Raised from a parser callback to stop parsing the rest of a refused read.

    httptools turns it into an ``HttpParserError``, which uvicorn answers with
    `GuardedHttpToolsProtocol.send_400_response`: a no-op once the 431 is sent.
    """


@dataclass(slots=True)
class _ServerTally:
    """What the connections of one server hold together.

    Attributes:
        per_client: Open connections by client address.
        in_pool: Tasks of the requests that hold a request slot (all but ``/health`` and
            refusals).
    """

    per_client: Counter[str] = field(default_factory=Counter)
    in_pool: set[asyncio.Task[None]] = field(default_factory=set)


# One tally per uvicorn server (its `ServerState`, shared by its connections), forgotten with it.
_TALLIES: weakref.WeakKeyDictionary[ServerState, _ServerTally] = weakref.WeakKeyDictionary()


def _tally_of(server_state: ServerState) -> _ServerTally:
    tally = _TALLIES.get(server_state)
    if tally is None:
        tally = _TALLIES[server_state] = _ServerTally()
    return tally


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
def _busy_app(message: str) -> Any:
    """An ASGI app answering 503 ``server_busy`` with ``message`` and ``Retry-After: 1``."""
    headers, body = _error_parts(503, "server_busy", message, 1)

    async def busy(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return busy


def _in_flight_message(limit: int | None) -> str:
    most = f"{limit} requests, its most" if limit else "as many requests as it may"
    return f"the server is handling {most}; retry shortly"


def _connections_message(limit: int) -> str:
    return f"the server holds {limit} open connections, its most; retry shortly"


def _client_connections_message(limit: int) -> str:
    return f"this client holds {limit} open connections, its most; only /health is answered"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with deadlines, size caps and JSON errors (see module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = get_settings()  # read once per process
        self._tally = _tally_of(self.server_state)
        self._address: str | None = None  # counted in the tally's per_client while open
        # The 503 message for anything but /health, on a connection over a connection cap.
        self._over_cap: str | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._shutdown_timer: asyncio.TimerHandle | None = None
        self._head_pending = True  # between requests or inside a request's line and headers
        self._head_bytes = 0
        self._refused = False
        self._shutting_down = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept a connection: in full, for /health only when over a cap, or not at all."""
        super().connection_made(transport)
        if self.client is not None:
            self._address = self.client[0]
            self._tally.per_client[self._address] += 1
        most = self._limits.max_connections
        open_now = len(self.connections)
        if open_now > HARD_CONNECTION_FACTOR * most:
            self._refuse(503, "server_busy", _connections_message(most), retry_after_s=1)
            return
        per_client = self._limits.max_connections_per_client
        if open_now > most:
            self._over_cap = _connections_message(most)
        elif per_client and self._address and self._tally.per_client[self._address] > per_client:
            self._over_cap = _client_connections_message(per_client)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget a closed connection, its timers and its place in its client's count."""
        self._cancel_timers()
        self._uncount()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection over to uvicorn's WebSocket protocol, which counts it itself."""
        self._cancel_timers()
        self._uncount()
        super().handle_websocket_upgrade()

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

    def pause_writing(self) -> None:
        """The client reads slower than the response is written: start the write deadline."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._write_timeout_s(), self._write_timed_out)

    def resume_writing(self) -> None:
        """The client read enough of the response: its write deadline is off."""
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def shutdown(self) -> None:
        """Begin a graceful shutdown; a body still arriving gets a short time to finish.

        Uvicorn waits for such a request to the end of its grace period, then cancels it: a
        500 with a traceback in the log, and a broken pipe for the client. The body is given
        one body timeout (at most half the grace) instead, then answered 503. A client not
        reading its response gets at most half the grace too, then its connection is reset.
        """
        self._shutting_down = True
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.response_started
            and cycle.more_body
            and not self._head_pending
            and self._shutdown_timer is None
        ):
            window = self._within_grace(self._limits.body_timeout_s)
            self._shutdown_timer = self.loop.call_later(window, self._body_cut_by_shutdown)
        if self._write_timer is not None:  # likewise a client not reading its response
            self._write_timer.cancel()
            self._write_timer = self.loop.call_later(self._write_timeout_s(), self._write_timed_out)
        super().shutdown()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        scope = cycle.scope
        health = scope["method"] in _HEALTH_METHODS and scope["path"] == f"{self.root_path}/health"
        pooled = False
        if app is service_unavailable:  # uvicorn's own --limit-concurrency, if it is given
            app = _busy_app(_in_flight_message(None))
        elif self._over_cap is not None:
            # One request per over-cap connection: it closes after the answer, so a client
            # over its cap cannot keep a connection by asking /health again and again.
            cycle.keep_alive = False
            if not health:
                app = _busy_app(self._over_cap)
        elif not health:
            limit = self._limits.max_requests_in_flight
            if len(self._tally.in_pool) >= limit:
                app = _busy_app(_in_flight_message(limit))
            else:
                pooled = True
        # uvicorn's own `_start_asgi_task`, which does not hand back the task it starts.
        if getattr(self.config, "reset_contextvars", False):
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        if pooled:
            task.add_done_callback(self._tally.in_pool.discard)
            self._tally.in_pool.add(task)

    def _within_grace(self, seconds: float) -> float:
        """``seconds``, or half the shutdown grace if shorter: what is left then ends cleanly."""
        grace = self.config.timeout_graceful_shutdown
        return seconds if grace is None else min(seconds, grace / 2)

    def _write_timeout_s(self) -> float:
        if self._shutting_down:
            return self._within_grace(self._limits.write_timeout_s)
        return self._limits.write_timeout_s

    def _uncount(self) -> None:
        if self._address is not None:
            per_client = self._tally.per_client
            per_client[self._address] -= 1
            if per_client[self._address] <= 0:
                del per_client[self._address]  # a Counter keeps zeros: forget the address
            self._address = None

    def _refuse_large_head(self) -> None:
        message = f"request line and headers are larger than {self._limits.max_header_bytes} bytes"
        self._refuse(431, "headers_too_large", message)

    def _header_timeout_s(self) -> float:
        if self._over_cap is not None:
            return min(self._limits.header_timeout_s, OVER_CAP_HEADER_TIMEOUT_S)
        return self._limits.header_timeout_s

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._header_timeout_s(), self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing of a request has arrived: nothing to answer
            return
        message = f"request line and headers not received within {self._header_timeout_s():g} s"
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

    def _write_timed_out(self) -> None:
        """Drop a connection whose client has not read its response for the write timeout."""
        self._write_timer = None
        prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        self.logger.warning(
            "%sdropped: the response was not read within %g s", prefix, self._write_timeout_s()
        )
        self._cancel_timers()
        if self.cycle is not None and not self.cycle.response_complete:
            # The app's `send` returns at once from now on and its `receive` says the client
            # left, so a streamed response's generator is closed rather than left waiting.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        # Not `close`: it would wait, without end, for the unread buffer to be written. And a
        # reset rather than a FIN, or the kernel keeps the unsent bytes (up to its send
        # buffer, 4 MiB on loopback) for minutes, trying to deliver them.
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.transport.abort()

    def _body_cut_by_shutdown(self) -> None:
        self._shutdown_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if not cycle.response_started and cycle.more_body:
            self._refuse(
                503,
                "service_unavailable",
                "the server is shutting down and the request body had not all arrived; "
                "retry shortly",
                retry_after_s=SHUTDOWN_RETRY_AFTER_S,
                of_current_request=True,
            )

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
        # The write deadline stays: `close` waits for what the client has not read yet.
        self._cancel_timers(keep_write_timer=True)
        owed = self.cycle is not None and not self.cycle.response_complete
        if self.cycle is not None:
            # The app's task, if one runs, sees a disconnect and sends nothing more.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if of_current_request or not owed:
            self.transport.write(
                _error_bytes(status_code, error_type, message, retry_after_s=retry_after_s)
            )
        still_sending = self.cycle is not None and self.cycle.more_body
        if of_current_request and still_sending and self.transport.can_write_eof():
            # Closed now, the socket would answer the body's next bytes with a reset, which
            # can destroy the refusal before the client reads it. As nginx's lingering close:
            # the refusal and a FIN now, what still arrives dropped, the close a moment later.
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
            return
        self.transport.close()

    def _cancel_timers(self, *, keep_write_timer: bool = False) -> None:
        for timer in (self._head_timer, self._body_timer, self._shutdown_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._shutdown_timer = None
        if self._write_timer is not None and not keep_write_timer:
            self._write_timer.cancel()
            self._write_timer = None
