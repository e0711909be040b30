"""Smoke test of ``bench/feature_speed.py``: a random base at 71 px, a tiny ONNX model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.lambda_testing import build_model


@pytest.mark.bench
def test_feature_speed_reports_decoding_and_both_runtimes(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import feature_speed

    model, data = build_model(tmp_path / "model.onnx", image_size=71), data_dir.resolve()
    monkeypatch.chdir(tmp_path)  # the published table lands here
    argv = ["--onnx", str(model), "--data-dir", str(data), "--weights", "none"]
    assert feature_speed.main([*argv, "--image-size", "71"]) == 0
    (table,) = Path("docs/results").glob("feature-speed-*.md")
    speeds = re.findall(r"\| ([^|]+) \| ([0-9.]+) (?:ms/photo|photos/s) \|", table.read_text())
    assert [step for step, _ in speeds] == [
        "decode + resize (training's `decode_file`)",
        "Keras `predict_on_batch`, batch 8",
        "Keras `predict_on_batch`, batch 32",
        "onnxruntime fp32, batch 8",
        "onnxruntime fp32, batch 32",
    ]
    assert all(float(value) > 0 for _, value in speeds)
