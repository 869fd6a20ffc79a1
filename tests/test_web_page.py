"""The web page: its routes, then a real headless Chromium driving it against a real uvicorn.

The browser is the system's (Debian's ``chromium``; ``.ci/run`` installs it): the package
registries serve no browser builds. Where none is installed the browser tests are skipped,
never passed, and under CI (``CI`` set) they fail.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli.main import main as cli_main
from bench.server import running_server
from tests.conftest import need_debian_package
from tests.test_structures import rock_salt

CHROMIUM = os.environ.get("MAGORDER_TEST_CHROMIUM") or shutil.which("chromium") or ""
NO_BROWSER = "no chromium on this machine (apt-get install chromium)"


def _need_browser() -> None:
    need_debian_package(CHROMIUM, NO_BROWSER)


CANDIDATES = "id,formula,density\nc1,NiO,6.67\nc2,Qq2,3.0\nc3,NaCl,\n"


def test_the_page_and_its_files_are_served_by_the_app(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    # Nothing from elsewhere: every script, stylesheet and image is the app's own.
    assert "http://" not in page.text
    assert "https://" not in page.text
    assert client.head("/").status_code == 200


def test_the_card_as_html_shows_its_plots_from_the_model(density_client: TestClient) -> None:
    html = density_client.get("/model/card.html")
    assert html.status_code == 200
    assert "<table>" in html.text
    assert "magorder density estimator" in html.text


def test_card_image_links_resolve(tmp_path: Path, density_model_dir: Path) -> None:
    from app.core.model_card import HEAD_DIRNAMES
    from app.core.model_manifest import seal_model_directory
    from app.main import create_app
    from tests.conftest import make_settings

    served = shutil.copytree(density_model_dir, tmp_path / "model")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    (served / "MODEL_CARD.md").write_text("# card\n\n![plot](plot.png)\n", encoding="utf-8")
    (served / "plot.png").write_bytes(png)
    (served / "density" / "MODEL_CARD.md").write_text("# head\n\n![p](p.png)\n", encoding="utf-8")
    (served / "density" / "p.png").write_bytes(png)
    seal_model_directory(served, HEAD_DIRNAMES)  # sealed with them, as an export would
    with TestClient(create_app(make_settings(served))) as app_client:
        card = app_client.get("/model/card").text
        assert "![plot](plot.png)" in card
        assert "![p](density/p.png)" in card
        # A browser at /model/card resolves these to /model/plot.png and /model/density/p.png.
        assert app_client.get("/model/plot.png").content == png
        assert app_client.get("/model/density/p.png").content == png
        assert app_client.get("/model/missing.png").status_code == 404
        assert app_client.get("/model/metadata.json").status_code == 404
        assert app_client.get("/model/saved_model/saved_model.pb").status_code == 404


def test_a_table_upload_answers_what_the_cli_writes(
    tmp_path: Path, density_client: TestClient, density_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    source = tmp_path / "candidates.csv"
    source.write_text(CANDIDATES, encoding="utf-8")
    response = density_client.post(
        "/predict/table", files={"file": ("candidates.csv", CANDIDATES.encode())}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    out = tmp_path / "cli.csv"
    cli_main(["predict", str(source), "-o", str(out), "--model-dir", str(density_model_dir)])
    capsys.readouterr()
    assert response.text == out.read_text(encoding="utf-8")
    bad = density_client.post("/predict/table", files={"file": ("x.csv", b"name\nNiO\n")})
    assert bad.status_code == 422
    assert "no formula column" in bad.json()["error"]["message"]


def test_structure_files_upload_as_a_table(density_client: TestClient) -> None:
    files = [
        ("files", ("NiO.cif", rock_salt().to(fmt="cif"))),
        ("files", ("junk.cif", "data_junk\n")),
    ]
    response = density_client.post("/predict/table", files=files)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["file"] for r in rows] == ["NiO.cif", "junk.cif"]
    assert rows[0]["reduced_formula"] == "NiO"
    assert "no atom sites" in rows[1]["error"]


@pytest.fixture(scope="module")
def browser_url() -> Iterator[str]:
    """A real uvicorn on the committed model, whose card has real plots."""
    _need_browser()
    with running_server() as server:
        yield server.base_url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_in_a_browser_a_formula_gets_its_bars(browser: object, browser_url: str) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    page = browser.new_page()
    page.goto(browser_url + "/")
    expect(page.locator("#model-status")).to_contain_text("Serving Materials Project head")
    page.get_by_label("Formula", exact=True).fill("NiO")
    page.get_by_role("button", name="Predict", exact=True).click()
    mp = page.locator("#mp-answer")
    expect(mp).to_contain_text("Materials Project's DFT label")
    expect(mp.locator(".bar")).to_have_count(4)
    # The committed model is an ensemble: the spread of its members is shown.
    expect(page.locator("#magnetic")).to_contain_text("Magnetic at all")
    expect(page.locator("#magnetic")).to_contain_text("members differ by up to")
    expect(page.locator("#used")).to_contain_text("estimated from the composition")
    # An error from the API appears next to the field it is about.
    page.get_by_label("Formula", exact=True).fill("Qq2")
    page.get_by_role("button", name="Predict", exact=True).click()
    expect(page.locator("#formula-error")).to_contain_text("unknown element symbol")
    page.close()


def test_in_a_browser_a_csv_with_a_bad_row_is_screened_and_downloaded(
    browser: object, browser_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    source = tmp_path / "candidates.csv"
    source.write_text(CANDIDATES, encoding="utf-8")
    page = browser.new_page(accept_downloads=True)
    page.goto(browser_url + "/")
    page.locator("#table-files").set_input_files(str(source))
    page.get_by_role("button", name="Predict all").click()
    expect(page.locator("#table-progress")).to_contain_text("3 rows: 2 predicted, 1 failed")
    expect(page.locator("#results tbody tr")).to_have_count(3)
    expect(page.locator("#results tr.failed")).to_have_count(1)
    with page.expect_download() as download:
        page.locator("#download").click()
    saved = tmp_path / "downloaded.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [r["id"] for r in rows] == ["c1", "c2", "c3"]
    assert "unknown element symbol" in rows[1]["error"]
    page.close()


def test_in_a_browser_the_card_images_load(browser: object, browser_url: str) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    page = browser.new_page()
    page.goto(browser_url + "/model/card.html")
    page.wait_for_load_state("load")
    loaded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    # The MP head's three plots and the experiment head's two, each decoded by the browser.
    assert len(loaded) >= 5
    assert all(loaded)
    page.close()
