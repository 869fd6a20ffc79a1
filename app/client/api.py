"""The Python API: ``Magorder`` runs the model in this process, ``MagorderClient`` a server's.

Both predict formulas (with densities, or none to have them estimated), crystal structures
(file paths, their text, or pymatgen ``Structure`` objects) and pandas DataFrames, and give
back a DataFrame with the columns ``magorder predict`` writes, in the same units::

    from magorder import Magorder

    model = Magorder.load()  # the bundled model, loaded once
    model.predict(["Fe2O3", "NiO"], [5.24, 6.67])
    model.predict_structures(["Fe2O3.cif"])

``MagorderClient("http://localhost:8000")`` does the same through the REST API, in batches of
the server's ``max_batch_size``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import httpx
import pandas as pd

from app.client.remote import RemoteBackend
from app.core.backend import Backend, LocalBackend
from app.core.batch import CompoundQuery
from app.core.columns import ADDED_COLUMNS, NUMERIC_COLUMNS, result_cells
from app.core.results import BatchResult
from app.core.structures import StructureFormat, format_of_filename


def _as_list(values: Any, n: int | None, what: str) -> list[Any]:
    if values is None or isinstance(values, str | int | float | Path):
        return [values] * (n or 1)
    listed = list(values)
    if n is not None and len(listed) != n:
        raise ValueError(f"{len(listed)} {what} for {n} compounds")
    return listed


def _structure_query(
    structure: Any, fmt: StructureFormat | str | None, item_id: str | None
) -> CompoundQuery:
    chosen = None if fmt is None else StructureFormat(fmt)
    if isinstance(structure, Path) or (
        isinstance(structure, str) and "\n" not in structure and Path(structure).is_file()
    ):
        path = Path(structure)
        return CompoundQuery(
            structure=path.read_text(encoding="utf-8-sig"),
            structure_format=chosen or format_of_filename(path.name),
            id=item_id if item_id is not None else str(path),
        )
    if isinstance(structure, str):
        return CompoundQuery(structure=structure, structure_format=chosen, id=item_id)
    if hasattr(structure, "to") and hasattr(structure, "composition"):  # a pymatgen Structure
        return CompoundQuery(
            structure=structure.to(fmt="json"), structure_format=StructureFormat.JSON, id=item_id
        )
    raise TypeError(
        f"a structure is a file path, its text or a pymatgen Structure, not {type(structure)}"
    )


def results_frame(results: Sequence[BatchResult], inputs: pd.DataFrame) -> pd.DataFrame:
    """The input rows with the columns ``magorder predict`` adds, numbers as floats.

    Args:
        results: One result per input row, in order.
        inputs: The input rows.

    Returns:
        ``inputs`` with `ADDED_COLUMNS` after its own columns.
    """
    added = pd.DataFrame(
        [dict.fromkeys(ADDED_COLUMNS, "") | result_cells(r) for r in results],
        columns=list(ADDED_COLUMNS),
        index=inputs.index,
    )
    for column in NUMERIC_COLUMNS:
        added[column] = pd.to_numeric(added[column].replace("", None), errors="coerce")
    return pd.concat([inputs, added], axis=1)


class _Predicting:
    """What both entry points do, given a backend."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def results(self, queries: Sequence[CompoundQuery]) -> list[BatchResult]:
        """Predict queries as typed results (``BatchItemOk`` or ``BatchItemError``).

        Args:
            queries: The compounds, formulas or structures.

        Returns:
            One result per query, in order; ``index`` is its position.
        """
        size = self._backend.max_batch_size
        found: list[BatchResult] = []
        for start in range(0, len(queries), size):
            chunk = self._backend.predict(queries[start : start + size])
            found.extend(r.model_copy(update={"index": start + r.index}) for r in chunk)
        return found

    def predict(
        self,
        formulas: str | Iterable[str],
        densities: float | Iterable[float | None] | None = None,
        *,
        ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Predict formulas, with their densities or none.

        Args:
            formulas: One formula or many.
            densities: The density of each in g/cm³ (one number for one formula); None, or a
                None in the list, to have it estimated from the composition.
            ids: Your name for each, kept in an ``id`` column.

        Returns:
            One row per formula: ``formula``, ``density`` (as given), ``id`` when given, then
            the columns of ``magorder predict``.
        """
        listed = [formulas] if isinstance(formulas, str) else list(formulas)
        rho = _as_list(densities, len(listed), "densities")
        names = None if ids is None else [str(i) for i in _as_list(ids, len(listed), "ids")]
        queries = [
            CompoundQuery(
                formula=f,
                density=None if d is None else float(d),
                id=None if names is None else names[i],
            )
            for i, (f, d) in enumerate(zip(listed, rho, strict=True))
        ]
        inputs = pd.DataFrame({"formula": listed, "density": rho})
        if names is not None:
            inputs.insert(0, "id", names)
        return results_frame(self.results(queries), inputs)

    def predict_structures(
        self,
        structures: Iterable[Any],
        *,
        formats: StructureFormat | str | Iterable[StructureFormat | str | None] | None = None,
        ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Predict crystal structures.

        Args:
            structures: Each a file path (``str`` or ``Path``), a structure file's text, or a
                pymatgen ``Structure``.
            formats: The format of each (or one for all); from the file name, else from the
                content, when None.
            ids: Your name for each; a file's path when omitted.

        Returns:
            One row per structure: ``id`` and the cell's ``formula``, then the columns of
            ``magorder predict``.
        """
        listed = list(structures)
        fmts = _as_list(formats, len(listed), "formats")
        names: list[str | None] = (
            [None] * len(listed)
            if ids is None
            else [str(i) for i in _as_list(ids, len(listed), "ids")]
        )
        queries = [_structure_query(s, f, n) for s, f, n in zip(listed, fmts, names, strict=True)]
        results = self.results(queries)
        inputs = pd.DataFrame(
            {
                "id": [q.id for q in queries],
                "formula": [getattr(r, "formula", None) for r in results],
            }
        )
        return results_frame(results, inputs)

    def predict_frame(
        self,
        frame: pd.DataFrame,
        *,
        formula_column: str = "formula",
        density_column: str | None = "density",
    ) -> pd.DataFrame:
        """Predict every row of a DataFrame of formulas.

        Args:
            frame: The compounds.
            formula_column: The column of formulas.
            density_column: The column of densities in g/cm³ (missing values are estimated);
                None, or a name the frame lacks, to estimate every density.

        Returns:
            ``frame`` with the columns of ``magorder predict`` added.

        Raises:
            KeyError: No such formula column.
            ValueError: The frame already has a column the prediction adds.
        """
        clashing = [c for c in ADDED_COLUMNS if c in frame.columns]
        if clashing:
            raise ValueError(f"the frame already has column(s) {clashing}, which are added")
        formulas = frame[formula_column].astype(str).tolist()
        if density_column is not None and density_column in frame.columns:
            values = pd.to_numeric(frame[density_column], errors="coerce")
            rho = [None if pd.isna(v) else float(v) for v in values]
        else:
            rho = [None] * len(formulas)
        queries = [CompoundQuery(formula=f, density=d) for f, d in zip(formulas, rho, strict=True)]
        return results_frame(self.results(queries), frame)


class Magorder(_Predicting):
    """magorder in this process: a model loaded once, predicting without a server.

    Build it with `Magorder.load`.
    """

    @classmethod
    def load(
        cls,
        model_dir: str | Path | None = None,
        *,
        runtime: str = "auto",
        batch_size: int = 1000,
    ) -> Magorder:
        """Load a model (the bundled one by default), with the same checks as the service.

        Args:
            model_dir: An exported model directory; ``MAGORDER_MODEL_DIR``, else the bundled
                model, when None.
            runtime: ``auto``, ``litert`` or ``tensorflow`` (see the README).
            batch_size: Compounds per model call.

        Returns:
            The loaded model.

        Raises:
            app.core.errors.ModelLoadError: The model is missing, edited or unreadable.
        """
        from app.config import Settings
        from app.core.model_runtime import ModelRuntime
        from app.core.predictor import Predictor

        settings = Settings() if model_dir is None else Settings(model_dir=Path(model_dir))
        predictor = Predictor.load(settings.model_dir, ModelRuntime(runtime))
        return cls(settings.local_backend(predictor, batch_size=batch_size))

    @property
    def model_version(self) -> str:
        """Version of the loaded model."""
        assert isinstance(self._backend, LocalBackend)  # noqa: S101
        return self._backend.predictor.metadata.model_version


class MagorderClient(_Predicting):
    """A running magorder service, through its REST API.

    Args:
        base_url: Where the service is, e.g. ``http://localhost:8000``.
        timeout_s: Longest wait for one request.
        retries: Further attempts after a connection error or a 503.
        batch_size: Most items per request; the server's ``max_batch_size`` caps it.

    Raises:
        app.core.backend.BackendError: The service cannot be reached or is not magorder.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        retries: int = 3,
        batch_size: int | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)
        try:
            remote = RemoteBackend(self._http, retries=retries)
        except BaseException:
            self._http.close()
            raise
        if batch_size is not None:
            remote.limit_batch_size(batch_size)
        super().__init__(remote)
        self.model_version = remote.health.model_version

    def close(self) -> None:
        """Close the connections to the service."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
