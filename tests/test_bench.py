"""The benchmark's own parts: its floor endpoints and its formulas (no timings asserted)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.features import parse_formula
from bench import floor_app
from bench.speed import quaternary_formulas


@pytest.fixture(scope="module")
def floor_client() -> Iterator[TestClient]:
    """The benchmark's app, serving the committed model as the benchmark does."""
    with TestClient(floor_app.app) as client:
        yield client


def test_floor_endpoints_take_the_predict_body_and_do_no_work(floor_client: TestClient) -> None:
    body = {"formula": "Fe2O3", "density": 5.24}
    assert floor_client.post(floor_app.FLOOR_PATH, json=body).json() == {"status": "ok"}
    same = floor_client.post(floor_app.SAME_SIGNATURE_PATH, json=body)
    assert same.status_code == 200
    assert same.json()["model_version"] == "floor"
    for path in (floor_app.FLOOR_PATH, floor_app.SAME_SIGNATURE_PATH):
        assert floor_client.post(path, json={"density": 5.2}).status_code == 422


def test_floor_endpoints_stay_out_of_the_service_schema(floor_client: TestClient) -> None:
    assert floor_app.FLOOR_PATH not in floor_client.get("/openapi.json").json()["paths"]


def test_batch_formulas_are_distinct_valid_quaternaries() -> None:
    formulas = quaternary_formulas(12_345, 1000)
    assert len(set(formulas)) == 1000
    assert set(formulas).isdisjoint(quaternary_formulas(13_345, 1000))
    for formula in formulas[::50]:
        _, amounts = parse_formula(formula)
        assert len(amounts) == 4
        assert "O" in amounts
