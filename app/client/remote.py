"""A magorder service over HTTP as a `Backend`: its batch routes, retried and chunked.

It answers as `app.core.backend.LocalBackend` does, so the command line and the Python API
give the same answers whether the model runs here or on a server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from app.core.backend import BackendError, BatchResults
from app.core.batch import CompoundQuery
from app.core.results import BatchOut, BatchResult, ErrorResponse, HealthOut

_Body = TypeVar("_Body", bound=BaseModel)

logger = logging.getLogger(__name__)


def _server_message(response: httpx.Response) -> str:
    try:
        return ErrorResponse.model_validate_json(response.content).error.message
    except ValueError:
        return f"{response.reason_phrase} (not a magorder error body)"


def _item(query: CompoundQuery) -> dict[str, Any]:
    """The JSON batch item of a query: only what it has, as the routes read it."""
    if query.structure is not None:
        item: dict[str, Any] = {"structure": query.structure}
        if query.structure_format is not None:
            item["format"] = query.structure_format.value
    else:
        item = {"formula": query.formula or ""}
        if query.density is not None:
            item["density"] = query.density
    if query.id is not None:
        item["id"] = query.id
    return item


class RemoteBackend:
    """A running magorder service, reached through its batch routes.

    Connection failures and 503s (a server still loading its model) are retried with a growing
    pause; batches never exceed the server's ``max_batch_size`` and are halved if the server
    finds a body too large.

    Args:
        client: An httpx client whose ``base_url`` is the service.
        retries: Further attempts after a failed one.
        backoff_s: Pause before the first retry; it doubles with each.
    """

    def __init__(self, client: httpx.Client, retries: int = 3, backoff_s: float = 0.5) -> None:
        self._client = client
        self._retries = retries
        self._backoff_s = backoff_s
        self._health = self._parsed(self._send("GET", "/health"), HealthOut)
        self._max_batch_size = self._health.max_batch_size

    @property
    def health(self) -> HealthOut:
        """What the server said of itself when this backend connected."""
        return self._health

    @property
    def max_batch_size(self) -> int:
        """Most items the server takes in one batch."""
        return self._max_batch_size

    def limit_batch_size(self, size: int) -> None:
        """Send at most ``size`` items per request, below the server's own limit."""
        self._max_batch_size = min(self._max_batch_size, size)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise BackendError(f"cannot reach {self._client.base_url}: {exc}") from exc
                reason = str(exc) or type(exc).__name__
            else:
                if response.status_code != 503 or last:
                    return response
                reason = "503: " + _server_message(response)
            pause = self._backoff_s * 2**attempt
            logger.warning("%s %s failed (%s); retrying in %.1f s", method, path, reason, pause)
            time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def predict(self, queries: Sequence[CompoundQuery]) -> BatchResults:
        """Predict the queries, in as many calls as the server's limits need.

        Formulas go to ``/predict/batch`` and structures to ``/predict/structure/batch``;
        the results come back in the queries' order, ``index`` their position.
        """
        results: list[BatchResult | None] = [None] * len(queries)
        for is_structure, path in ((False, "/predict/batch"), (True, "/predict/structure/batch")):
            positions = [
                i for i, q in enumerate(queries) if (q.structure is not None) == is_structure
            ]
            if not positions:
                continue
            answered = self._post(path, [_item(queries[i]) for i in positions])
            for position, result in zip(positions, answered, strict=True):
                results[position] = result.model_copy(update={"index": position})
        return [result for result in results if result is not None]

    def _post(self, path: str, items: list[dict[str, Any]]) -> BatchResults:
        if len(items) > self._max_batch_size:
            size = self._max_batch_size
            return self._post(path, items[:size]) + self._post(path, items[size:])
        response = self._send("POST", path, json={"items": items})
        if response.status_code == 413 and len(items) > 1:
            self._max_batch_size = max(1, len(items) // 2)
            return self._post(path, items)
        results = self._parsed(response, BatchOut).results
        if len(results) != len(items):
            raise BackendError(f"{path} answered {len(results)} results for {len(items)} items")
        return list(results)

    def _parsed(self, response: httpx.Response, body: type[_Body]) -> _Body:
        """The body of a 200 response, or an error naming what the server said instead."""
        where = f"{self._client.base_url.join(response.request.url.path)}"
        if response.status_code != 200:
            raise BackendError(
                f"{where} answered {response.status_code}: {_server_message(response)}"
            )
        try:
            return body.model_validate_json(response.content)
        except ValueError as exc:
            raise BackendError(f"{where} is not a magorder service: {exc}") from exc
