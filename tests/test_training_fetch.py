"""The Materials Project fetcher, against a fake client (the real API cannot be reached here)."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from model_training.__main__ import main
from model_training.fetch import (
    SUMMARY_FIELDS,
    FetchError,
    fetch_snapshot,
    read_api_key,
)
from model_training.mp.data import REQUIRED_COLUMNS, load_labelled_data, read_snapshot

SECRET = "not-a-real-key-0123456789"  # noqa: S105 - a test value, not a credential

DOCUMENTS: list[dict[str, Any]] = [
    {"material_id": "mp-19770", "formula_pretty": "Fe2O3", "density": 5.26, "ordering": "FM",
     "deprecated": False, "is_magnetic": True, "total_magnetization": 20.0,
     "num_magnetic_sites": 4, "energy_above_hull": 0.0, "theoretical": False, "nsites": 10},
    {"material_id": "mp-149", "formula_pretty": "Si", "density": 2.28, "ordering": "NM",
     "deprecated": False, "is_magnetic": False, "total_magnetization": 0.0,
     "num_magnetic_sites": 0, "energy_above_hull": 0.0, "theoretical": False, "nsites": 2},
    {"material_id": "mp-19009", "formula_pretty": "NiO", "density": 6.6, "ordering": "AFM",
     "deprecated": False, "is_magnetic": True, "total_magnetization": 0.0,
     "num_magnetic_sites": 2, "energy_above_hull": 0.0, "theoretical": False, "nsites": 4},
    {"material_id": "mp-1", "formula_pretty": "Cs", "density": 1.9, "ordering": "Unknown",
     "deprecated": False},
    {"material_id": "mp-2", "formula_pretty": "Fe3O4", "density": 5.1, "ordering": "FiM",
     "deprecated": True},
]  # fmt: skip


class FakeSummary:
    """Stands in for ``MPRester(...).materials.summary``, recording how it was called."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents
        self.calls: list[dict[str, Any]] = []
        self.api_key: str | None = None

    def search(self, *, fields: list[str], chunk_size: int, all_fields: bool) -> list[Any]:
        """Return the documents with only the fields asked for, as the API does."""
        self.calls.append({"fields": fields, "chunk_size": chunk_size, "all_fields": all_fields})
        return [{k: v for k, v in doc.items() if k in fields} for doc in self.documents]


def fake_client(summary: FakeSummary) -> Any:
    @contextmanager
    def open_client(api_key: SecretStr) -> Iterator[FakeSummary]:
        summary.api_key = api_key.get_secret_value()
        yield summary

    return open_client


def test_fetch_writes_a_snapshot_in_the_shared_schema_and_a_data_card(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = FakeSummary(DOCUMENTS)
    output = tmp_path / "snap" / "mp.csv"
    with caplog.at_level(logging.DEBUG):
        result = fetch_snapshot(
            output,
            api_key=SecretStr(SECRET),
            open_client=fake_client(summary),
            now=datetime(2026, 11, 25, tzinfo=UTC),
        )
    assert summary.api_key == SECRET
    assert summary.calls == [
        {"fields": list(SUMMARY_FIELDS), "chunk_size": 1000, "all_fields": False}
    ]
    frame = read_snapshot(output)
    assert list(frame.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert set(frame["label_source"]) == {"mp_label_2026-11-25"}
    assert frame["record_id"].tolist() == [d["material_id"] for d in DOCUMENTS]
    card = json.loads(result.data_card.read_text())
    assert card["rows"] == result.rows == len(DOCUMENTS)
    assert card["deprecated_rows"] == 1
    assert card["ordering_counts"] == {"AFM": 1, "FM": 1, "FiM": 1, "NM": 1, "Unknown": 1}
    # The key is never written anywhere: not in the files, the logs or the output.
    everything = (
        output.read_text() + result.data_card.read_text() + caplog.text + str(capsys.readouterr())
    )
    assert SECRET not in everything
    # The loader cleans what the fetch wrote, counting each dropped row by reason.
    data = load_labelled_data(output)
    assert data.report.dropped == {"deprecated": 1, "unknown_ordering": 1}
    assert sorted(data.rows["reduced_formula"]) == ["Fe2O3", "NiO", "Si"]


def test_no_documents_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no documents"):
        fetch_snapshot(
            tmp_path / "mp.csv", api_key=SecretStr(SECRET), open_client=fake_client(FakeSummary([]))
        )
    assert not (tmp_path / "mp.csv").exists()


@pytest.mark.parametrize("environ", [{}, {"MP_API_KEY": ""}])
def test_missing_key_is_a_clear_error(environ: dict[str, str]) -> None:
    with pytest.raises(FetchError, match="MP_API_KEY is not set"):
        read_api_key(environ)


def test_key_is_read_as_a_secret_that_does_not_print() -> None:
    key = read_api_key({"MP_API_KEY": SECRET})
    assert key.get_secret_value() == SECRET
    assert SECRET not in repr(key)
    assert SECRET not in str(key)


def test_fetch_command_without_a_key_exits_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MP_API_KEY", raising=False)
    assert main(["fetch", "--output", str(tmp_path / "mp.csv")]) == 2
    assert "MP_API_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "mp.csv").exists()


def test_real_client_accepts_the_call_and_has_the_fields() -> None:
    # The installed mp-api must take the search call as the fetcher makes it, and its summary
    # document must have every field asked for, or the real download would fail.
    summary_doc = pytest.importorskip("emmet.core.summary").SummaryDoc
    assert set(SUMMARY_FIELDS) <= set(summary_doc.model_fields)
    rester = pytest.importorskip("mp_api.client.routes.materials.summary").SummaryRester
    inspect.signature(rester.search).bind(
        rester, fields=list(SUMMARY_FIELDS), chunk_size=1000, all_fields=False
    )
