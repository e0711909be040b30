"""Smoke test of ``python -m bench.out_of_catalogue``: tiny data, one class left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.datasets import copy_subset

pytestmark = [pytest.mark.slow, pytest.mark.bench]


def test_the_bench_scores_every_signal_on_both_kinds_of_outsider(
    data_dir: Path, xception_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import out_of_catalogue

    data = copy_subset(data_dir, tmp_path / "data", ("hat", "pants", "shoes"), per_class=4)
    monkeypatch.chdir(tmp_path)
    argv = ["--data-dir", str(data), "--weights", str(xception_weights), "--image-size", "71"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--k", "2", "--limit", "3", "--quick"]
    assert out_of_catalogue.main([*argv, "--results", str(tmp_path / "results")]) == 0
    report = json.loads((tmp_path / "artifacts/bench/out-of-catalogue.json").read_text())
    assert report["photos"] == 36 and report["non_clothing"] >= 3
    assert set(report["near"]) == {"hat"}
    for table in (report["far"], report["near_pooled"]):
        assert set(table) == {"0.02", "0.05", "0.10"}
        for row in table.values():
            assert set(row) == set(out_of_catalogue.SCORES)
            for rates in row.values():
                assert all(0 <= rates[k] <= 1 for k in ("coverage", "flagged_out"))
    (published,) = (tmp_path / "results").glob("out-of-catalogue-*.md")
    assert "## Not clothing" in published.read_text()
