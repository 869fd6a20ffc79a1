"""Answering ``HEAD`` for every ``GET`` route, as HTTP asks: the same status and headers."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    """Route a ``HEAD`` request as ``GET`` and send back the headers without the body.

    FastAPI registers a route for the methods it is declared with only, so without this a
    monitor's ``HEAD /docs`` or ``HEAD /model/card`` is a 405. The response keeps the
    ``Content-Length`` that ``GET`` would send, as HTTP requires of a ``HEAD`` answer; the
    server sends no body for a ``HEAD`` request.

    Args:
        app: The application to wrap.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI scope."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self._app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self._app({**scope, "method": "GET"}, receive, send_headers_only)
