"""Tiny data, the real pipeline: train -> checkpoint -> manifest -> ONNX -> the Lambda handler."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from convert.checkpoint import read_manifest, select_run
from lambda_function import files, handler
from lambda_function.model_metadata import ModelMetadata
from lambda_function.preprocessing import preprocess
from tests.lambda_testing import FakeContext, assert_prediction
from tests_torch.conftest import REPO, TINY_CLASSES, TINY_SIZE
from torch_training.export import torch_logits
from torch_training.train import load_checkpoint

KERAS_RUN_KEYS = {  # training/manifest.py's run_entry
    "name", "config", "labels", "best_checkpoint", "best_epoch", "best_val_accuracy", "history",
    "fingerprint", "train_seconds", "trainable_params", "created_at", "versions", "test",
    "calibration",  # as `training cv --ship` writes it
}  # fmt: skip


def best_run(root: Path) -> dict:
    """The run ``convert`` picks from ``root``'s manifest (its ``best_run``)."""
    path = root / "manifest.json"
    return select_run(read_manifest(path), path)


def test_the_manifest_has_the_keras_runs_shape(tiny_trained) -> None:
    record = json.loads((tiny_trained / "manifest.json").read_text())
    assert record["framework"] == "pytorch"
    run = best_run(tiny_trained)
    assert set(run) == KERAS_RUN_KEYS
    assert run["labels"] == list(TINY_CLASSES)
    assert set(run["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(run["history"]["val_accuracy"]) == 3
    best = int(np.argmax(run["history"]["val_accuracy"])) + 1  # the first best epoch
    assert run["best_epoch"] == best
    assert run["best_val_accuracy"] == run["history"]["val_accuracy"][best - 1]
    assert (tiny_trained / run["best_checkpoint"]).is_file()
    assert run["best_checkpoint"].endswith(f"_{best:02d}_{run['best_val_accuracy']:.3f}.pt")
    assert run["trainable_params"] == 2048 * 16 + 16 + 16 * 3 + 3
    assert 0.0 <= run["test"]["accuracy"] <= 1.0 and run["test"]["n_images"] == 12


def test_the_checkpoint_reloads_to_the_recorded_accuracy(tiny_trained, tiny_data) -> None:
    run = best_run(tiny_trained)
    model, saved = load_checkpoint(tiny_trained / run["best_checkpoint"])
    assert saved["labels"] == list(TINY_CLASSES) and saved["image_size"] == TINY_SIZE
    photos = sorted((tiny_data / "validation").glob("*/*.jpg"))
    x = np.concatenate([preprocess(p.read_bytes(), TINY_SIZE) for p in photos])
    predicted = torch_logits(model, x).argmax(axis=1)
    truth = np.array([TINY_CLASSES.index(p.parent.name) for p in photos])
    assert float((predicted == truth).mean()) == pytest.approx(run["best_val_accuracy"])


def test_the_export_carries_the_contract_and_passed_verification(tiny_export) -> None:
    proto = onnx.load(str(tiny_export))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["schema"] == "fashion-classifier/1"
    assert (props["layout"], props["preprocessing"], props["resize"], props["output"]) == (
        "NHWC", "xception", "nearest", "logits"
    )  # fmt: skip
    assert json.loads(props["labels"]) == list(TINY_CLASSES)
    versions = json.loads(props["versions"])
    assert set(versions) == {"torch", "onnx", "onnxruntime", "opset"}  # who made it
    assert versions["opset"] == "17"  # read from the file
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    report = json.loads((tiny_export.parent / "report.json").read_text())
    assert report["passed"] is report["variants"]["int8"]["accepted"]
    for check in ("parity", "user_path"):  # batches, and one photo at a time as served
        assert report["verification"][check]["n_images"] == 12
        assert report["verification"][check]["max_abs_diff"] <= 1e-4
    assert report["verification"]["user_path"]["preprocessing_mismatch"] == []
    assert set(report["variants"]) == {"fp32", "int8"}
    assert report["served"]["variant"] == (
        "int8" if report["variants"]["int8"]["accepted"] else "fp32"
    )
    served = tiny_export.parent / "serve.onnx"
    assert files.sha256_file(served) == report["served"]["sha256"]
    assert list(tiny_export.parent.glob(".*.part")) == []


def serve(monkeypatch, path: Path) -> None:
    monkeypatch.setenv("MODEL_PATH", str(path))
    handler.get_service.cache_clear()


@pytest.fixture
def clean_service():
    handler.get_service.cache_clear()
    yield
    handler.get_service.cache_clear()


def upload(photo: Path) -> dict:
    """The handler's answer to an API Gateway upload of ``photo``."""
    event = json.loads((REPO / "events" / "http-api-upload.json").read_text())
    event["body"] = base64.b64encode(photo.read_bytes()).decode()
    response = handler.lambda_handler(event, FakeContext())
    assert response["statusCode"] == 200, response["body"]
    answer = json.loads(response["body"])
    assert_prediction(answer, TINY_CLASSES, TINY_SIZE)
    return answer


def test_the_unchanged_handler_serves_the_pytorch_export(
    tiny_export, tiny_trained, tiny_data, monkeypatch, clean_service
) -> None:
    serve(monkeypatch, tiny_export)
    run = best_run(tiny_trained)
    model, _ = load_checkpoint(tiny_trained / run["best_checkpoint"])
    temperature = run["calibration"]["temperature"]
    threshold = run["calibration"]["confidence_threshold"]
    for photo in sorted((tiny_data / "test").glob("*/*.jpg"))[::4]:
        answer = upload(photo)
        logits = torch_logits(model, preprocess(photo.read_bytes(), TINY_SIZE))[0] / temperature
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(list(answer["scores"].values()), expected, atol=1e-5)
        assert answer["category"] == TINY_CLASSES[int(np.argmax(logits))]
        assert answer["confident"] == (threshold is not None and expected.max() >= threshold)


def test_the_unchanged_handler_serves_its_int8_variant(
    tiny_export, tiny_data, monkeypatch, clean_service, tmp_path
) -> None:
    from convert.images import Photo
    from convert.quantize import quantize_int8

    int8 = tmp_path / "model.int8.onnx"
    train = [Photo(p) for p in sorted((tiny_data / "train").glob("*/*.jpg"))]
    quantize_int8(tiny_export, int8, train, TINY_SIZE)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    serve(monkeypatch, int8)
    for photo in sorted((tiny_data / "test").glob("*/*.jpg"))[::4]:
        upload(photo)


def test_fine_tuning_records_a_second_run_that_reloads_exactly(tiny_options, tmp_path) -> None:
    from dataclasses import replace

    from torch_training import commands

    run = replace(tiny_options.run, epochs=1, fine_tune_from="block14", fine_tune_epochs=2)
    options = replace(tiny_options, output_dir=tmp_path / "training", run=run)
    assert commands.train(options) == 0
    record = json.loads((options.output_dir / "manifest.json").read_text())
    names = [r["name"] for r in record["runs"]]
    assert names == ["s80_lr0.001_in16_dr0.2", "s80_lr0.001_in16_dr0.2_ft14"]
    head, tuned = record["runs"]
    assert (
        record["best_run"] == max((tuned, head), key=lambda r: r["best_val_accuracy"])["name"]
    )  # fine-tuning wins a tie
    assert tuned["trainable_params"] > 3_000_000 + head["trainable_params"]
    assert tuned["config"]["path"].startswith("fine-tune from block14")
    model, _ = load_checkpoint(options.output_dir / tuned["best_checkpoint"])
    base, _ = load_checkpoint(options.output_dir / head["best_checkpoint"])
    changed = [
        name
        for name, value in model.state_dict().items()
        if not torch.equal(value, base.state_dict()[name])
    ]
    assert changed and all(n.startswith(("base.sepconv14", "head.")) for n in changed), changed


def test_an_export_that_disagrees_with_pytorch_is_not_put_in_place(
    tiny_trained, tiny_options, tmp_path, monkeypatch
) -> None:
    from convert.errors import VerificationError
    from torch_training import commands
    from torch_training import export as export_module

    real = export_module.torch_logits
    monkeypatch.setattr(export_module, "torch_logits", lambda m, x: real(m, x) + 1e-3)
    output = tmp_path / "model" / "model.onnx"
    with pytest.raises(VerificationError, match="PyTorch vs onnxruntime"):
        commands.export(tiny_options, None, output, limit=3)
    assert not output.exists() and not (output.parent / "serve.onnx").exists()
    assert list(output.parent.glob(".*.part")) == []
    report = json.loads((output.parent / "report.json").read_text())
    assert report["verification"]["passed"] is False
    assert report["verification"]["parity"]["max_abs_diff"] > 1e-4


def test_a_stale_int8_is_removed_and_serve_onnx_replaced(
    tiny_trained, tiny_options, tmp_path
) -> None:
    from torch_training import commands

    output = tmp_path / "model" / "model.onnx"
    output.parent.mkdir()
    stale = output.with_name("model.int8.onnx")
    stale.write_bytes(b"an int8 model of an older checkpoint")
    (output.parent / "serve.onnx").write_bytes(b"the older served model")
    assert commands.export(tiny_options, None, output, limit=3) == 0
    assert not stale.exists()
    assert files.sha256_file(output.parent / "serve.onnx") == files.sha256_file(output)


def test_the_runs_calibration_is_fitted_on_validation_and_served(
    tiny_trained, tiny_export, tiny_data
) -> None:
    from training.calibration import fit_temperature

    run = best_run(tiny_trained)
    model, _ = load_checkpoint(tiny_trained / run["best_checkpoint"])
    photos = sorted((tiny_data / "validation").glob("*/*.jpg"))
    x = np.concatenate([preprocess(p.read_bytes(), TINY_SIZE) for p in photos])
    truth = np.array([TINY_CLASSES.index(p.parent.name) for p in photos])
    calibration = run["calibration"]
    assert calibration["temperature"] == pytest.approx(
        fit_temperature(torch_logits(model, x), truth), rel=1e-4
    )
    assert calibration["fitted_on"].startswith("validation split (12 photos)")
    served = ModelMetadata.from_props(
        {p.key: p.value for p in onnx.load(str(tiny_export.parent / "serve.onnx")).metadata_props}
    )
    assert served.temperature == pytest.approx(calibration["temperature"])
    assert served.confidence_threshold == calibration["confidence_threshold"]


def test_a_checkpoint_that_disagrees_with_its_manifest_is_refused(
    tiny_trained, tiny_options, tmp_path
) -> None:
    import shutil
    from dataclasses import replace

    from convert.errors import ConvertError
    from torch_training import commands

    root = tmp_path / "training"
    shutil.copytree(tiny_trained, root)
    record = json.loads((root / "manifest.json").read_text())
    for run in record["runs"]:
        run["labels"] = list(reversed(run["labels"]))
    (root / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ConvertError, match="expected the labels and size its manifest records"):
        commands.export(replace(tiny_options, output_dir=root), None, tmp_path / "m.onnx")


def test_the_export_command_exits_as_convert_does(tiny_trained, tiny_options, tmp_path, capsys):
    from torch_training.cli import main

    common = ["--data-dir", str(tiny_options.data_dir), "--weights", str(tiny_options.weights)]
    common += ["--output-dir", str(tiny_trained), "-o", str(tmp_path / "model.onnx")]
    assert main(["export", *common, "--run", "nope"]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err
    assert main(["export", *common, "--limit", "2"]) == 0
    assert "serving fp32" in capsys.readouterr().out
    assert (tmp_path / "serve.onnx").is_file()
