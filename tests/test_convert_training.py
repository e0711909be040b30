"""The hand-over: what `python -m training train` leaves, `python -m convert` ships.

A tiny real run (Xception with random weights at 71 px, four classes, four photos per
class and split) is trained with training's own CLI and converted from its output
folder, exactly as `make run` chains them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from convert.cli import main as convert
from tests.datasets import copy_subset
from tests.onnx_files import read_metadata

pytestmark = pytest.mark.slow

CLASSES = ("dress", "hat", "pants", "shoes")
SIZE = 71


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, data_dir: Path) -> Path:
    return copy_subset(data_dir, tmp_path_factory.mktemp("tiny") / "ds", CLASSES, per_class=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset: Path) -> Path:
    from training.cli import main as train

    out = tmp_path_factory.mktemp("train")
    argv = ["train", "--data-dir", str(dataset), "--weights", "none", "--image-size", str(SIZE)]
    argv += ["--epochs", "2", "--output-dir", str(out / "training"), "--no-cache"]
    assert train([*argv, "--verbose", "0", "--seed", "3"]) == 0
    return out / "training"


@pytest.fixture(scope="module")
def converted(tmp_path_factory, trained: Path, dataset: Path) -> Path:
    output = tmp_path_factory.mktemp("model") / "model.onnx"
    assert convert([str(trained), "-o", str(output), "--data-dir", str(dataset)]) == 0
    return output


def test_the_trained_xception_converts_and_matches_keras(converted: Path) -> None:
    report = json.loads((converted.parent / "report.json").read_text())
    for check in ("parity", "user_path"):
        figures = report["verification"][check]
        assert figures["n_images"] == 4 * len(CLASSES)  # every validation photo
        assert figures["max_abs_diff"] <= 1e-4
        assert figures["top1_agreement"] == 1.0


def test_the_model_carries_the_training_runs_contract(converted: Path, trained: Path) -> None:
    manifest = json.loads((trained / "manifest.json").read_text())
    (run,) = manifest["runs"]
    checkpoint = (trained / run["best_checkpoint"]).read_bytes()
    metadata = read_metadata(converted)
    assert metadata.labels == CLASSES == tuple(run["labels"])
    assert metadata.image_size == SIZE
    assert metadata.val_accuracy == run["best_val_accuracy"]
    assert metadata.checkpoint_sha256 == hashlib.sha256(checkpoint).hexdigest()
