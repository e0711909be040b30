"""int8 against fp32 out of fold for a fine-tuned method: each fold's network converted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline_fixture import Pipeline


@pytest.mark.slow
def test_every_fold_of_a_fine_tuned_method_is_converted_and_quantised(
    tiny_pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared tiny pipeline's CV (3 folds of 36 photos, the real base at 71 px): each
    fold of ft-block13-swa retrained as the CV trained it, converted and quantised."""
    from bench import cv_int8

    report = json.loads((tiny_pipeline.cv / "cv.json").read_text())
    row = next(r for r in report["methods"] if r["method"] == "ft-block13-swa")
    monkeypatch.chdir(tmp_path)  # the scratch JSON and the published table land here
    argv = ["--cv-dir", str(tiny_pipeline.cv), "--data-dir", str(tiny_pipeline.data)]
    argv += ["--weights", str(tiny_pipeline.weights), "--cache-dir", str(tiny_pipeline.cache)]
    assert cv_int8.main([*argv, "--method", "ft-block13-swa"]) == 0
    result = json.loads(Path("artifacts/bench/cv_int8-ft-block13-swa.json").read_text())
    assert result["photos"] == report["n_photos"] == 36
    # Each fold trained for its own chosen epochs, as the CV report says, and answers as
    # the CV's fold did.
    folds = result["folds"]
    assert [f["fine_tune_epochs"] for f in folds] == row["fold_epochs"]
    assert result["keras_same_answer_as_cv"] == 1.0
    # The converted fp32 network answers as the Keras one it came from.
    assert result["onnx_fp32_vs_keras_max_abs_logit_diff"] < 1e-3
    held_out = [round(f["fp32_accuracy"] * 12) for f in folds]  # right of 12 per fold
    assert result["fp32_accuracy"] == pytest.approx(sum(held_out) / 36)
    diff = result["int8_accuracy"] - result["fp32_accuracy"]
    assert result["int8_minus_fp32"] == pytest.approx(diff)
    lo, hi = result["int8_minus_fp32_ci"]
    assert lo <= diff <= hi
    (table,) = Path("docs/results").glob("cv-int8-ft-block13-swa-*.md")
    assert "| fold | fine-tuning epochs |" in table.read_text()


def test_a_method_the_report_did_not_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import cv_int8

    (tmp_path / "cv.json").write_text(json.dumps({"methods": [{"method": "today"}]}))
    with pytest.raises(SystemExit) as exit_:
        cv_int8.main(["--cv-dir", str(tmp_path), "--method", "ft-block13-swa"])
    assert exit_.value.code == 2
    assert "Received: 'ft-block13-swa'" in capsys.readouterr().err


def test_by_default_it_reads_the_cv_report_make_run_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import cv_int8

    report = tmp_path / "artifacts" / "cv-ship" / "cv.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"methods": [{"method": "today"}]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cv_int8.main(["--method", "ft-block13-swa"])
    assert exit_.value.code == 2
    assert "CV report in artifacts/cv-ship ran" in capsys.readouterr().err


def test_an_fp32_model_is_refused_as_the_int8_base(tmp_path: Path) -> None:
    from bench import cv_int8
    from tests.lambda_testing import build_model

    fp32 = build_model(tmp_path / "serve.onnx")
    with pytest.raises(ValueError, match=r"Expected an int8 model .* Received: .*serve.onnx, fp32"):
        cv_int8.base_model(fp32, tmp_path / "base.onnx")
