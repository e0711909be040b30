"""Smoke test of ``bench/runtimes.py``: every runtime, one tiny trained-shape model, real photos.

Quick mode: a 32 px Keras model (conv + pooling + dense), its ONNX, optimised and int8
variants, 12 test photos, 3 batch-1 runs. Figures are checked for shape and sense, never
for speed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench import runtimes

SIZE = 32
RUNTIMES = ("keras", "litert", "ort_fp32", "ort_optimized", "ort_int8")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """A training folder (manifest + .h5) and an ONNX folder with the three variants."""
    import keras
    import onnx

    from convert.images import labelled_split, spread_sample
    from convert.metadata import attach_metadata
    from convert.quantize import quantize_int8, save_optimized
    from convert.to_onnx import keras_to_onnx
    from lambda_function.model_metadata import ModelMetadata

    root = tmp_path_factory.mktemp("runtimes")
    labels = sorted(p.name for p in (data_dir / "test").iterdir() if p.is_dir())
    inputs = keras.Input((SIZE, SIZE, 3), name="input")
    features = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(inputs, keras.layers.Dense(len(labels), name="logits")(pooled))
    h5 = root / "training" / "runs" / "tiny" / "tiny.h5"
    h5.parent.mkdir(parents=True)
    model.save(h5)
    run = {"name": "tiny", "config": {"image_size": SIZE}, "labels": labels}
    run["best_checkpoint"] = "runs/tiny/tiny.h5"
    manifest = {"best_run": "tiny", "runs": [run]}
    (root / "training" / "manifest.json").write_text(json.dumps(manifest))

    onnx_dir = root / "onnx"
    onnx_dir.mkdir()
    proto = keras_to_onnx(model, SIZE)
    sha = hashlib.sha256(h5.read_bytes()).hexdigest()
    attach_metadata(
        proto, ModelMetadata(labels=tuple(labels), image_size=SIZE, checkpoint_sha256=sha)
    )
    onnx.save(proto, str(onnx_dir / "model.onnx"))
    save_optimized(onnx_dir / "model.onnx", onnx_dir / "model.optimized.onnx")
    calibration = spread_sample(labelled_split(data_dir, "train", labels), 10)
    quantize_int8(onnx_dir / "model.onnx", onnx_dir / "model.int8.onnx", calibration, SIZE)
    return root / "training", onnx_dir


@pytest.mark.slow
@pytest.mark.bench
def test_quick_mode_measures_every_runtime(
    tiny_models: tuple[Path, Path], data_dir: Path, tmp_path: Path
) -> None:
    training, onnx_dir = tiny_models
    argv = [str(training), "--onnx-dir", str(onnx_dir), "--out", str(tmp_path)]
    argv += ["--results", str(tmp_path / "results")]
    argv += ["--data-dir", str(data_dir), "--quick", "--test-limit", "12"]
    argv += ["--iterations", "3", "--batches", "1", "--threads", "1"]
    assert runtimes.main(argv) == 0

    report = json.loads((tmp_path / "runtimes.json").read_text())
    (model,) = report["models"]
    assert (model["run"], model["image_size"]) == ("tiny", SIZE)
    assert tuple(model["variants"]) == RUNTIMES
    assert model["test_photos"] == 12
    for name, figures in model["variants"].items():
        assert 0.0 <= figures["test_accuracy"] <= 1.0, name
        assert figures["batch1_ms"]["n"] == 3, name
        assert figures["batch1_ms"]["p50"] <= figures["batch1_ms"]["p95"], name
        assert figures["batch8_images_per_s"] > 0, name
        assert figures["peak_rss_mb"] > 0, name
        assert figures["model_bytes"] > 0, name
    assert isinstance(model["variants"]["litert"]["xnnpack"], bool)
    peak = report["matmul_peak_gflops"]
    assert peak["1_thread_gflops"] > 0
    assert model["gflop_per_image"] == pytest.approx(16.7 * (SIZE / 299) ** 2, abs=0.01)
    assert len(report["session_options"]["cases"]) == 4  # one thread count, four settings
    pre = report["preprocessing"]
    assert pre["large_photo_draft_ms"]["n"] == 5
    assert pre["large_photo_max_abs_diff_uint8"] >= 0

    table = (tmp_path / "runtimes.md").read_text()
    for label in runtimes.LABELS.values():
        assert label in table
    (tmp_path / "runtimes.md").unlink()
    assert runtimes.main(["--markdown-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "runtimes.md").read_text() == table


def test_a_missing_training_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"manifest\.json"):
        runtimes.main([str(tmp_path / "nowhere"), "--out", str(tmp_path)])
