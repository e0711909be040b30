"""The hand-over: what `python -m training cv --ship` leaves, `python -m convert` ships.

The shared tiny pipeline (tests/pipeline_fixture.py) ships ``ft-block13-swa`` with the
real base at 71 px and converts its training folder with ``--int8``, exactly as
`make run SHIP_METHOD=ft-block13-swa` chains them.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.onnx_files import read_metadata
from tests.pipeline_fixture import LABELS, SHIPPED, SIZE, Pipeline

pytestmark = pytest.mark.slow


def test_the_shipped_xception_converts_and_matches_keras(tiny_pipeline: Pipeline) -> None:
    report = json.loads((tiny_pipeline.model.parent / "report.json").read_text())
    for check in ("parity", "user_path"):
        figures = report["verification"][check]
        assert figures["n_images"] == 4 * len(LABELS)  # every validation photo
        assert figures["max_abs_diff"] <= 1e-4
        assert figures["top1_agreement"] == 1.0
    assert (tiny_pipeline.model.parent / "serve.onnx").is_file()


def test_the_model_carries_the_shipped_runs_contract(tiny_pipeline: Pipeline) -> None:
    training = tiny_pipeline.shipped[SHIPPED]
    manifest = json.loads((training / "manifest.json").read_text())
    (run,) = manifest["runs"]
    checkpoint = (training / run["best_checkpoint"]).read_bytes()
    metadata = read_metadata(tiny_pipeline.model)
    assert metadata.labels == LABELS == tuple(run["labels"])
    assert metadata.image_size == SIZE
    assert metadata.val_accuracy == run["best_val_accuracy"]
    assert metadata.checkpoint_sha256 == hashlib.sha256(checkpoint).hexdigest()
    assert metadata.temperature == pytest.approx(run["calibration"]["temperature"])
