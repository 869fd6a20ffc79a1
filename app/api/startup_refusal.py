"""Reporting a refused start-up as the one line already logged, not as a traceback."""

from __future__ import annotations

import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import StartupRefusedError


class StartupRefusalMiddleware:
    """Keep the traceback of a `StartupRefusedError` out of the server's start-up failure.

    The lifespan logs ``refusing to start: <reason>`` and re-raises; Starlette then hands the
    server the whole traceback to print. For this expected failure the logged line says it
    all, so the traceback is dropped; any other start-up error keeps its traceback.

    Args:
        app: The application whose lifespan is watched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI scope, quieting a refused start-up."""
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return

        async def send_without_traceback(message: Message) -> None:
            # Starlette sends this from the `except` block of the failed start-up, so the
            # exception being handled is the cause.
            if message["type"] == "lifespan.startup.failed" and isinstance(
                sys.exception(), StartupRefusedError
            ):
                message = {"type": "lifespan.startup.failed", "message": ""}
            await send(message)

        await self._app(scope, receive, send_without_traceback)
