"""Streaming ``POST /predict/table``: what a client that leaves, or a failure, does to it.

Apart from the browser tests: Playwright's synchronous API keeps an event loop running in
their module, and these run their own.
"""

from __future__ import annotations

import threading
import time
from typing import IO

import anyio
import pytest

from app.api.routes.table import stream_flushes


def test_a_client_gone_mid_stream_frees_the_screening_thread() -> None:
    def endless(sink: IO[str]) -> None:
        for i in range(100_000):
            sink.write(f"row {i}\n")
            sink.flush()

    async def read_one_and_leave() -> str:
        chunks = stream_flushes(endless)
        first = await anext(chunks)
        await chunks.aclose()  # what Starlette does when the client disconnects
        return first

    assert anyio.run(read_one_and_leave) == "row 0\n"
    deadline = time.monotonic() + 10
    while any(t.name == "magorder-table" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the screening thread is still running"
        time.sleep(0.05)


def test_a_failing_screening_cuts_the_stream_with_its_error() -> None:
    def failing(sink: IO[str]) -> None:
        sink.write("header\n")
        sink.flush()
        raise RuntimeError("model exploded")

    async def read_all() -> list[str]:
        return [chunk async for chunk in stream_flushes(failing)]

    with pytest.raises(RuntimeError, match="model exploded"):
        anyio.run(read_all)
