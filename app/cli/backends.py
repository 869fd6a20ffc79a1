"""Where the command line's predictions come from: the model in this process, or a server."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel

from app.api.batch import predict_items
from app.api.schemas import BatchItemError, BatchItemOk, BatchOut, ErrorResponse, HealthOut
from app.core.features import DEFAULT_LIMITS, FormulaLimits
from app.core.predictor import Predictor

BatchResults = list[BatchItemOk | BatchItemError]
_Body = TypeVar("_Body", bound=BaseModel)

logger = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """The predictions cannot be had (server unreachable, refusing, or answering nonsense)."""


class Backend(Protocol):
    """Predicts batches of ``{"formula", "density"}`` items as ``POST /predict/batch`` does."""

    @property
    def max_batch_size(self) -> int:
        """Most items one call may take."""
        ...

    def predict(self, items: list[dict[str, Any]]) -> BatchResults:
        """Predict the items, each failing alone; one result per item, in order."""
        ...


class LocalBackend:
    """The model loaded in this process, run by the code that serves ``/predict/batch``.

    Args:
        predictor: The loaded model.
        limits: Bounds on formulas, as the service's settings give them.
        max_batch_size: Rows per model call.
    """

    def __init__(
        self,
        predictor: Predictor,
        limits: FormulaLimits = DEFAULT_LIMITS,
        max_batch_size: int = 1000,
    ) -> None:
        self._predictor = predictor
        self._limits = limits
        self._max_batch_size = max_batch_size

    @property
    def max_batch_size(self) -> int:
        """Rows per model call."""
        return self._max_batch_size

    def predict(self, items: list[dict[str, Any]]) -> BatchResults:
        """Predict the items in one model call."""
        return predict_items(items, self._predictor, self._limits).results


def _server_message(response: httpx.Response) -> str:
    try:
        return ErrorResponse.model_validate_json(response.content).error.message
    except ValueError:
        return f"{response.reason_phrase} (not a magorder error body)"


class RemoteBackend:
    """A running magorder service, reached through ``POST /predict/batch``.

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
        health = self._parsed(self._send("GET", "/health"), HealthOut)
        self._max_batch_size = health.max_batch_size

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

    def predict(self, items: list[dict[str, Any]]) -> BatchResults:
        """Predict the items, in as many calls as the server's limits need."""
        if len(items) > self._max_batch_size:
            size = self._max_batch_size
            return self.predict(items[:size]) + self.predict(items[size:])
        response = self._send("POST", "/predict/batch", json={"items": items})
        if response.status_code == 413 and len(items) > 1:
            self._max_batch_size = max(1, len(items) // 2)
            return self.predict(items)
        return self._parsed(response, BatchOut).results

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
