"""Smoke test of ``bench/upload_bounds.py``: memory and slow-S3 cases, a tiny model, tiny."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import upload_bounds


@pytest.mark.bench
def test_the_benchmark_measures_memory_per_batch_and_the_deadline_against_a_slow_s3(
    tiny_model: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "set-by-the-benchmark")  # restored after the test
    argv = ["--model", str(tiny_model), "--photos", "3", "--memory-mb", "1024,3008",
            "--slow-photos", "3", "--remaining-s", "6"]  # fmt: skip
    code = upload_bounds.main(
        [*argv, "--results", str(tmp_path / "results"), "--scratch", str(tmp_path)]
    )

    assert code == 0
    report = json.loads((tmp_path / "upload_bounds.json").read_text())
    assert [(r["memory_mb"], r["photos"], r["stored"]) for r in report["memory"]] == [
        (1024, 3, 3),
        (3008, 3, 3),
    ]
    assert all(r["peak_mb"] >= r["base_mb"] > 0 for r in report["memory"])
    by_case = {r["case"]: r for r in report["slow"]}
    hung = by_case["one GetObject never answers"]
    assert hung["stored"] == 2 and "1 of 3 photos" in hung["error"]
    assert all(r["left_s"] > 0 for r in report["slow"])  # returned before the deadline
    (page,) = (tmp_path / "results").glob("upload-bounds-*.md")
    assert "| now | 3008 | 3 |" in page.read_text()
