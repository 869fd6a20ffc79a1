"""Downloading a labelled snapshot from the Materials Project with the official ``mp-api`` client.

The key is read only from the ``MP_API_KEY`` environment variable, the name ``mp-api`` itself
uses, into a `SecretStr`: it is never printed or logged. The snapshot has the schema of
`model_training.data.REQUIRED_COLUMNS`, plus MP fields that help analysis, and is written
with a JSON data card beside it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_training.data import file_sha256
from model_training.mp.data import REQUIRED_COLUMNS

logger = logging.getLogger(__name__)

SUMMARY_FIELDS: tuple[str, ...] = (
    "material_id",
    "formula_pretty",
    "density",
    "ordering",
    "deprecated",
    "is_magnetic",
    "total_magnetization",
    "num_magnetic_sites",
    "energy_above_hull",
    "theoretical",
    "nsites",
)
"""Fields asked of MP's summary endpoint: the snapshot's own and those that help analysis."""

EXTRA_COLUMNS: tuple[str, ...] = tuple(
    name for name in SUMMARY_FIELDS if name not in REQUIRED_COLUMNS
)
MP_CITATION = "A. Jain et al., APL Materials 1, 011002 (2013); data licensed CC BY 4.0"


class FetchError(RuntimeError):
    """The download cannot start or did not give a usable snapshot (no key, no documents)."""


class MaterialsProjectSettings(BaseSettings):
    """Credentials of the Materials Project API.

    Attributes:
        mp_api_key: The user's API key, from ``MP_API_KEY`` (materialsproject.org, dashboard).
    """

    # MP_API_KEY, unprefixed, is the variable mp-api and pymatgen read: users already set it.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False)

    mp_api_key: SecretStr = Field(validation_alias="MP_API_KEY", min_length=1)


def read_api_key(environ: Mapping[str, str] | None = None) -> SecretStr:
    """Read the Materials Project API key from the environment.

    Args:
        environ: Variables to read instead of ``os.environ`` (tests).

    Returns:
        The key, wrapped so that it is never printed.

    Raises:
        FetchError: ``MP_API_KEY`` is unset or empty.
    """
    source = os.environ if environ is None else environ
    try:
        settings = MaterialsProjectSettings.model_validate(
            {"MP_API_KEY": source["MP_API_KEY"]} if "MP_API_KEY" in source else {}
        )
    except ValidationError as exc:
        raise FetchError(
            "MP_API_KEY is not set: create a key at https://materialsproject.org/api "
            "(your dashboard) and run `export MP_API_KEY=<your key>`"
        ) from exc
    return settings.mp_api_key


class SummarySearch(Protocol):
    """What the fetcher needs of ``MPRester().materials.summary``."""

    def search(self, *, fields: list[str], chunk_size: int, all_fields: bool) -> Iterable[Any]:
        """Return summary documents with the fields asked for."""


SummaryClientFactory = Callable[[SecretStr], AbstractContextManager[SummarySearch]]


@contextmanager
def open_materials_project(api_key: SecretStr) -> Iterator[SummarySearch]:
    """Open the real Materials Project client; ``mp-api`` prints its own progress bars.

    Args:
        api_key: The user's key.

    Yields:
        ``MPRester(...).materials.summary``.

    Raises:
        FetchError: ``mp-api`` is not installed.
    """
    try:
        from mp_api.client import MPRester
    except ImportError as exc:
        raise FetchError(
            f"the Materials Project client is not installed ({exc}); "
            "install it with: pip install -e '.[fetch]'"
        ) from exc
    # use_document_model=False: plain dicts, no emmet models to build for 150k documents.
    with MPRester(api_key=api_key.get_secret_value(), use_document_model=False) as rester:
        yield rester.materials.summary


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a fetch wrote.

    Attributes:
        snapshot: The snapshot CSV.
        data_card: Its JSON data card.
        rows: Number of materials in the snapshot.
    """

    snapshot: Path
    data_card: Path
    rows: int


def _field(document: Any, name: str) -> Any:
    value = document.get(name) if isinstance(document, Mapping) else getattr(document, name, None)
    return getattr(value, "value", value)  # an Ordering enum, when the document model is used


def documents_to_snapshot(documents: Iterable[Any], *, label_source: str) -> pd.DataFrame:
    """Turn summary documents into snapshot rows.

    Args:
        documents: Dicts (or emmet documents) carrying `SUMMARY_FIELDS`.
        label_source: The ``label_source`` of every row, e.g. ``mp_label_2026-11-25``.

    Returns:
        One row per document, `REQUIRED_COLUMNS` first, then `EXTRA_COLUMNS`.
    """
    source = f"Materials Project API (mp-api {_mp_api_version()})"
    records = []
    for document in documents:
        material_id = str(_field(document, "material_id"))
        records.append(
            {
                "record_id": material_id,
                "material_id": material_id,
                "formula_pretty": _field(document, "formula_pretty"),
                "density": _field(document, "density"),
                "ordering": _field(document, "ordering"),
                "label_source": label_source,
                "source": source,
                **{name: _field(document, name) for name in EXTRA_COLUMNS},
            }
        )
    return pd.DataFrame.from_records(records, columns=[*REQUIRED_COLUMNS, *EXTRA_COLUMNS])


def _mp_api_version() -> str:
    try:
        return version("mp-api")
    except PackageNotFoundError:
        return "not installed"


def fetch_snapshot(
    output: Path,
    *,
    api_key: SecretStr,
    open_client: SummaryClientFactory = open_materials_project,
    now: datetime | None = None,
) -> FetchResult:
    """Download every MP material's ordering and density into a snapshot CSV and data card.

    Args:
        output: The snapshot CSV to write; its data card goes to ``<output>.card.json``.
        api_key: The user's Materials Project key.
        open_client: Opens the summary endpoint (the real `MPRester` unless testing).
        now: The time stamped on the snapshot (now, when omitted).

    Returns:
        The paths written and the number of rows.

    Raises:
        FetchError: The endpoint returned no documents.
    """
    now = now or datetime.now(UTC)
    label_source = f"mp_label_{now.date().isoformat()}"
    logger.info("asking the Materials Project for %s of every material", ", ".join(SUMMARY_FIELDS))
    with open_client(api_key) as summary:
        documents = summary.search(fields=list(SUMMARY_FIELDS), chunk_size=1000, all_fields=False)
        snapshot = documents_to_snapshot(documents, label_source=label_source)
    if snapshot.empty:
        raise FetchError("the Materials Project returned no documents")
    logger.info("received %d materials; writing %s", len(snapshot), output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    snapshot.to_csv(partial, index=False)
    partial.replace(output)
    card_path = output.with_name(f"{output.name}.card.json")
    orderings = Counter(str(value) for value in snapshot["ordering"])
    card = {
        "snapshot": output.name,
        "sha256": file_sha256(output),
        "fetched_at": now.isoformat(),
        "label_source": label_source,
        "client": f"mp-api {_mp_api_version()}",
        "endpoint": "materials.summary.search",
        "fields": list(SUMMARY_FIELDS),
        "rows": len(snapshot),
        "ordering_counts": dict(sorted(orderings.items())),
        "deprecated_rows": int(snapshot["deprecated"].fillna(False).astype(bool).sum()),
        "labels": "MP's stored `ordering`: the collinear DFT (GGA/GGA+U) ground state MP found, "
        "not an experimental measurement",
        "citation": MP_CITATION,
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return FetchResult(snapshot=output, data_card=card_path, rows=len(snapshot))
