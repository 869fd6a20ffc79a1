"""magorder from Python: predict magnetic ordering in this process or through a server.

``Magorder.load()`` loads the bundled model once; ``MagorderClient(url)`` talks to a running
service. Both give DataFrames with the columns ``magorder predict`` writes. See
`app.client.api` for the details.
"""

from __future__ import annotations

from app import __version__
from app.client.api import Magorder, MagorderClient
from app.core.backend import BackendError
from app.core.batch import CompoundQuery
from app.core.errors import MagorderError, ModelLoadError

__all__ = [
    "BackendError",
    "CompoundQuery",
    "Magorder",
    "MagorderClient",
    "MagorderError",
    "ModelLoadError",
    "__version__",
]
