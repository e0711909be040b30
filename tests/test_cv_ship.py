"""From cross-validation to the served model: report, shipped run, calibration in ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convert.checkpoint import find_checkpoint
from convert.errors import ConvertError
from convert.metadata import attach_metadata, make_metadata
from lambda_function.model import Classifier
from lambda_function.model_metadata import ModelMetadata
from tests.datasets import copy_subset
from tests.lambda_testing import build_model
from tests.pipeline_fixture import LABELS as TINY_LABELS
from tests.pipeline_fixture import Pipeline

LABELS = list(TINY_LABELS)


def write_run(root: Path, calibration: object) -> None:
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "m.h5").write_bytes(b"weights")
    run = {
        "name": "cv_today",
        "config": {"image_size": 16},
        "labels": LABELS,
        "best_checkpoint": "runs/m.h5",
        "best_val_accuracy": 0.91,
    }
    if calibration is not None:
        run["calibration"] = calibration
    (root / "manifest.json").write_text(json.dumps({"runs": [run], "best_run": "cv_today"}))


def test_convert_carries_the_runs_calibration_into_the_onnx_metadata(tmp_path: Path) -> None:
    write_run(tmp_path, {"temperature": 1.6, "confidence_threshold": 0.85})
    checkpoint = find_checkpoint(tmp_path)
    assert (checkpoint.temperature, checkpoint.confidence_threshold) == (1.6, 0.85)
    model = tmp_path / "model.onnx"
    build_model(model, labels=tuple(LABELS), image_size=16)
    import onnx

    proto = onnx.load(str(model))
    attach_metadata(proto, make_metadata(checkpoint.loaded(16), opset=17))
    onnx.save(proto, str(model))
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    metadata = ModelMetadata.from_props(props)
    assert (metadata.temperature, metadata.confidence_threshold) == (1.6, 0.85)
    assert Classifier.load(model).metadata.temperature == 1.6


def test_a_run_without_calibration_converts_uncalibrated(tmp_path: Path) -> None:
    write_run(tmp_path, None)
    checkpoint = find_checkpoint(tmp_path)
    assert (checkpoint.temperature, checkpoint.confidence_threshold) == (1.0, None)


@pytest.mark.parametrize("calibration", [{"temperature": "hot"}, [1.5], {"temperature": True}])
def test_a_malformed_calibration_is_named(tmp_path: Path, calibration: object) -> None:
    write_run(tmp_path, calibration)
    with pytest.raises(ConvertError, match="expected 'calibration' as"):
        find_checkpoint(tmp_path)


@pytest.mark.slow
def test_cv_on_tiny_data_reports_and_ships_a_calibrated_run(tiny_pipeline: Pipeline) -> None:
    from training.folds import stratified_folds

    out = tiny_pipeline.cv
    report = json.loads((out / "cv.json").read_text())
    assert report["n_photos"] == 36 and report["k"] == 3
    assert [row["method"] for row in report["methods"]] == ["today", "ft-block13-swa"]
    targets = np.repeat(np.arange(3), 4)
    targets = np.concatenate([targets, targets, targets])  # train, validation, test in order
    assert np.array_equal(np.load(out / "folds.npy"), stratified_folds(targets, 3, seed=5))
    assert np.load(out / "oof-today.npy").shape == (36, 3)
    assert (out / "reliability-today-calibrated.png").stat().st_size > 1000
    row = report["methods"][0]
    for key in ("accuracy", "accuracy_ci", "top3", "ece", "ece_calibrated", "temperature"):
        assert key in row
    assert row["accuracy_ci"][0] <= row["accuracy"] <= row["accuracy_ci"][1]
    checkpoint = find_checkpoint(tiny_pipeline.shipped["today"])
    assert checkpoint.run == "cv_today_s71_all"
    assert checkpoint.temperature == pytest.approx(row["temperature"])
    manifest = json.loads((tiny_pipeline.shipped["today"] / "manifest.json").read_text())
    assert manifest["runs"][0]["trained_on"] == "every labelled photo (train + validation + test)"
    assert row["epochs"] is None  # today's epoch is chosen on a holdout: the folds' median ships
    assert manifest["runs"][0]["best_epoch"] == int(np.median(row["fold_epochs"]))


def test_cv_help_names_its_options_without_loading_tensorflow() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "training", "cv", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    for option in ("--k", "--seed", "--methods", "--ship", "--ship-method"):
        assert option in done.stdout
    code = "import sys, training.cv_command; print('tensorflow' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert imported.stdout == "False\n"


def test_an_unknown_method_is_refused_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    from training import cv_command

    assert cv_command.main(["--methods", "today,magic"]) == 2
    assert (
        "Expected methods among today, ft-block13, ft-block13-swa. Received: 'magic'"
        in capsys.readouterr().err
    )


@pytest.mark.slow
def test_cv_fine_tunes_the_exit_flow_per_fold_and_averages_from_the_second_epoch(
    tiny_pipeline: Pipeline,
) -> None:
    out = tiny_pipeline.cv
    today, averaged = json.loads((out / "cv.json").read_text())["methods"]
    assert averaged["method"] == "ft-block13-swa" and averaged["config"]["fine_tune"] == "block13"
    assert averaged["config"]["fine_tune_average_from"] == 2
    assert "fine_tune_average_from" not in today["config"]
    # The fine-tuning epochs are the scored ones, each fold's chosen on its inner holdout.
    assert len(averaged["epoch_accuracy"]) == 5 and len(averaged["fold_epochs"]) == 3
    assert all(1 <= e <= 5 for e in averaged["fold_epochs"])
    # Fine-tuning moves the answers away from the head it started from.
    assert not np.allclose(np.load(out / "oof-ft-block13-swa.npy"), np.load(out / "oof-today.npy"))
    assert averaged["accuracy_ci"][0] <= averaged["accuracy"] <= averaged["accuracy_ci"][1]
    # Shipped: the fine-tuned base inside the .h5 (checked by the engine against its head).
    shipped = tiny_pipeline.shipped["ft-block13-swa"]
    checkpoint = find_checkpoint(shipped)
    assert checkpoint.run == "cv_ft-block13-swa_s71_all"
    entry = json.loads((shipped / "manifest.json").read_text())["runs"][0]
    epochs = entry["best_epoch"]
    assert entry["config"]["fine_tune_epochs"] == epochs == int(np.median(averaged["fold_epochs"]))
    averaged_over = f", weights averaged over fine-tuning epochs 2-{epochs}" if epochs > 1 else ""
    assert entry["config"]["path"] == (
        f"fine-tune from block13 (cached activations){averaged_over}"
        ", trained on every labelled photo"
    )
    import keras

    saved = keras.models.load_model(checkpoint.path, compile=False)
    assert not any(layer.trainable for layer in saved.layers if layer.name.startswith("xception"))


@pytest.mark.slow
def test_averaged_fine_tuning_answers_with_the_mean_of_its_epochs(
    tmp_path: Path, data_dir: Path
) -> None:
    """At lr 1e-3 (the tiny random base barely moves at 1e-4), one fold, as `cv` runs it."""
    from dataclasses import replace
    from functools import partial

    import keras

    from training import data, features
    from training.finetune import fine_tune_fold, labelled_activations
    from training.methods import METHODS
    from training.model import make_base

    dataset = data.scan(copy_subset(data_dir, tmp_path / "data", LABELS, per_class=4))
    keras.utils.set_random_seed(0)  # one random base for the features and the activations
    pooled, targets = features.labelled_features(dataset, 71, None, None)
    by_view = {"orig": pooled}
    keras.utils.set_random_seed(0)
    by_view["block13-input"] = labelled_activations(dataset, "block13", 71, None, None)
    everything = np.arange(len(targets))
    held_out = everything[1::3]  # a third of the 36 photos, every class
    runs = {
        name: fine_tune_fold(
            replace(METHODS[name], fine_tune_learning_rate=1e-3),
            by_view,
            targets,
            np.setdiff1d(everything, held_out),
            held_out,
            3,
            5,
            partial(make_base, 71, None),
        ).logits
        for name in ("ft-block13", "ft-block13-swa")
    }
    plain, averaged = runs["ft-block13"], runs["ft-block13-swa"]
    np.testing.assert_allclose(averaged[:2], plain[:2], atol=1e-5)  # the same run
    for epoch in (2, 3, 4):  # small steps: the mean weights answer the mean of the answers
        mean = plain[1 : epoch + 1].mean(axis=0)
        assert np.abs(averaged[epoch] - mean).max() < np.abs(plain[epoch] - mean).max() / 2


def test_fine_tuning_runs_only_when_named() -> None:
    from training.cv_command import DEFAULT_METHODS
    from training.methods import METHODS

    assert "ft-block13" in METHODS and "ft-block13" not in DEFAULT_METHODS
    assert set(DEFAULT_METHODS) == {n for n, m in METHODS.items() if not m.fine_tune}
