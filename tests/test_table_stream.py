"""Streaming ``POST /predict/table``: what a client that leaves, or a failure, does to it.

Apart from the browser tests: Playwright's synchronous API keeps an event loop running in
their module, and these run their own.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from typing import IO

import anyio
import pytest

from app.api.json_body import RequestBodyError
from app.api.routes.table import STOPPED_PREFIX, TableStreams, stream_flushes


def _wait_for_a_free_place(streams: TableStreams) -> None:
    """Claim a place (and give it back) within seconds, or fail: the last one was kept."""
    deadline = time.monotonic() + 10
    while True:
        try:
            streams.claim().release()
            return
        except RequestBodyError:
            assert time.monotonic() < deadline, "the screening never gave its place back"
            time.sleep(0.05)


def test_a_client_gone_mid_stream_frees_the_screening_place() -> None:
    streams = TableStreams(1)

    def endless(sink: IO[str]) -> None:
        for i in range(100_000):
            sink.write(f"row {i}\n")
            sink.flush()

    async def read_one_and_leave() -> str:
        chunks = stream_flushes(endless, streams.claim(), 1)
        first = await anext(chunks)
        await chunks.aclose()  # what Starlette does when the client disconnects
        return first

    assert anyio.run(read_one_and_leave) == "row 0\n"
    _wait_for_a_free_place(streams)


def test_a_failing_screening_ends_the_csv_with_a_row_saying_it_stopped() -> None:
    streams = TableStreams(1)

    def failing(sink: IO[str]) -> None:
        sink.write("a,b,error\n1,2,\n")
        sink.flush()
        sink.write("3,4,\n")  # written, not yet flushed: still sent
        raise RuntimeError("model exploded")

    async def read_all() -> str:
        return "".join([chunk async for chunk in stream_flushes(failing, streams.claim(), 3)])

    text = anyio.run(read_all)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[:3] == [["a", "b", "error"], ["1", "2", ""], ["3", "4", ""]]
    # The internal error's text stays in the server's log; the client learns it was cut.
    assert rows[3] == [
        "",
        "",
        f"{STOPPED_PREFIX} an internal error (the server's log has it); the rows above are "
        "all that were screened",
    ]
    assert len(rows) == 4
    _wait_for_a_free_place(streams)


def test_screenings_beyond_the_pool_are_refused_with_retry_after() -> None:
    streams = TableStreams(2)
    first, second = streams.claim(), streams.claim()
    with pytest.raises(RequestBodyError) as refused:
        streams.claim()
    assert refused.value.status_code == 503
    assert refused.value.error_type == "server_busy"
    assert refused.value.headers == {"Retry-After": "1"}
    assert "2 tables" in str(refused.value.detail)
    first.abandon()  # never started: its place comes back at once
    second.release()
    second.release()  # once only: the pool never grows past its size
    streams.claim()
    streams.claim()
    with pytest.raises(RequestBodyError):
        streams.claim()


def test_screenings_run_on_a_bounded_pool_of_threads() -> None:
    streams = TableStreams(2)
    seen: set[str] = set()

    def note_thread(sink: IO[str]) -> None:
        seen.add(threading.current_thread().name)
        sink.write("x\n")

    async def run_many() -> None:
        for _ in range(10):
            assert [c async for c in stream_flushes(note_thread, streams.claim(), 1)] == ["x\n"]
            _wait_for_a_free_place(streams)

    anyio.run(run_many)
    assert 1 <= len(seen) <= 2
    assert all(name.startswith("magorder-table") for name in seen)
