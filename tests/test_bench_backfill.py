"""Smoke test of ``bench/backfill_throughput.py``: the whole path, a tiny model, real photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import backfill_throughput
from lambda_function import handler


@pytest.mark.bench
def test_the_benchmark_measures_every_batch_size_and_prices_them(
    tiny_model: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("MODEL_PATH", str(tiny_model))  # restored after the test
    for name in ("AWS_ENDPOINT_URL", "RESULTS_TABLE", "AWS_ACCESS_KEY_ID"):
        monkeypatch.setenv(name, "set-by-the-benchmark")
    handler.get_service.cache_clear()
    argv = ["--model", str(tiny_model), "--photos", "12", "--batch-sizes", "4", "--rounds", "1"]
    try:
        code = backfill_throughput.main(
            [*argv, "--results", str(tmp_path / "results"), "--scratch", str(tmp_path)]
        )
    finally:
        handler.get_service.cache_clear()

    assert code == 0
    report = json.loads((tmp_path / "backfill_throughput.json").read_text())
    assert set(report["photos_per_s"]) == {"1", "4"}
    assert all(rate > 0 for rate in report["photos_per_s_per_vcpu"].values())
    engines = {(row["engine"], row["architecture"]) for row in report["cost"]}
    assert len(engines) == 4 and all(row["total"] > 0 for row in report["cost"])
    (page,) = (tmp_path / "results").glob("backfill-throughput-*.md")
    text = page.read_text()
    assert "| 4 |" in text and "Distributed Map (batches of 4)" in text
