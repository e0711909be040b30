"""The seed comparison of the two training paths: means, gap and Welch interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import pytorch_vs_keras as bench


def write(out: Path, framework: str, accuracies: list[float]) -> None:
    record = {"test_accuracy": {str(i + 1): a for i, a in enumerate(accuracies)}}
    (out / f"pytorch_vs_keras-seeds-{framework}.json").write_text(json.dumps(record))


def test_the_seed_report_gives_each_mean_and_the_gap_with_a_welch_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "OUT", tmp_path)
    write(tmp_path, "keras", [0.90, 0.91, 0.92])
    write(tmp_path, "torch", [0.89, 0.89, 0.90, 0.91])
    text = bench.seeds_report()
    assert "| 1 | 0.9000 | 0.8900 |" in text
    assert "| 4 |" not in text  # one row per seed Keras ran
    assert "**0.9100 ± 0.0100** | **0.8975 ± 0.0096** |" in text
    # gap 1.25 points; variances of the means 0.0001/3 and 0.0000917/4; Welch df 4.3 -> t 2.776
    half = 2.776 * (0.0001 / 3 + 0.00009167 / 4) ** 0.5
    assert f"**+1.25 points** (95% Welch interval [{1.25 - half * 100:+.2f}, " in text
    assert "4.3 degrees of freedom" in text
