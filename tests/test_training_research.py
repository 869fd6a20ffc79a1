"""The research code kept out of the package: the ``ablate`` command and its variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_training.metrics import expected_calibration_error, probabilities_from_logits, score
from research.ablate import main
from research.ablation import fit_vector_scaling, tune_decision_offsets
from tests.snapshot_fixture import write_snapshot


def test_ablate_command_scores_every_variant_and_exports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot.csv", rows_per_class=40)
    run_dir = tmp_path / "run"
    code = main(
        ["--data", str(snapshot), "--run-dir", str(run_dir), "--epochs", "3",
         "--ensemble-size", "1", "--quiet"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    saved = (run_dir / "ablation.md").read_text()
    variants = [line.split(" | ")[0].strip("| ") for line in saved.splitlines()[4:]]
    assert variants == [
        "lightgbm", "lightgbm + offsets", "magorder", "3 networks", "1 network", "no ranks",
        "dropout 0.4",
        "labels only", "set encoder", "magorder + offsets", "magorder, vector scaling",
        "magorder + trees",
    ]  # fmt: skip
    for line in saved.splitlines()[4:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        figures = [float(cell) for cell in cells[2:]]
        assert all(0.0 <= figure <= 1.0 for figure in figures), line
    assert saved.splitlines()[2] in printed
    assert sorted(p.name for p in run_dir.iterdir()) == ["ablation.md", "split.csv"]


def test_decision_offsets_and_vector_scaling_fit_what_they_claim() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    # Logits that know the class but are biased against class 3 ...
    logits = (np.eye(4)[labels] * 2.0 + rng.normal(0, 1.0, (2000, 4))).astype(np.float32)
    logits[:, 3] -= 1.2
    offsets = tune_decision_offsets(logits, labels)
    assert offsets[0] == 0.0
    assert offsets[3] > 0.5  # the bias against class 3 is undone
    assert (
        score(labels, (logits + offsets).argmax(axis=1)).macro_f1
        > score(labels, logits.argmax(axis=1)).macro_f1 + 0.05
    )
    logits *= 4.0  # ... and far too confident
    scale, offset = fit_vector_scaling(logits, labels)
    assert np.all(scale < 0.7)  # over-confidence shrunk (the Bayes logits are 2x, so 0.5)
    before = expected_calibration_error(probabilities_from_logits(logits), labels)
    after = expected_calibration_error(probabilities_from_logits(logits * scale + offset), labels)
    assert after < before / 2
