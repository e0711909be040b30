"""Fixtures of the PyTorch tests (run in ``.venv-torch``: ``make test-torch``).

The dataset and weights fixtures are the main suite's (``tests/datasets.py``).
Keras' reference features come from a subprocess of the main venv (``KERAS_PYTHON``,
default ``.venv/bin/python``), so this venv needs no TensorFlow.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.datasets import data_dir, xception_weights

__all__ = ["data_dir", "xception_weights"]  # the main suite's fixtures

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("dress", "hat", "pants", "shoes", "t-shirt")


@pytest.fixture(scope="session")
def keras_python() -> Path:
    path = Path(os.environ.get("KERAS_PYTHON", REPO / ".venv" / "bin" / "python"))
    if not path.is_file():
        pytest.fail(
            f"Expected KERAS_PYTHON to name the main venv's python (with TensorFlow), for "
            f"the Keras reference. Received: {str(path)!r}, which does not exist"
        )
    return path


@pytest.fixture(scope="session")
def parity_photos(data_dir: Path) -> list[Path]:
    """One validation photo of each of five classes."""
    return [sorted((data_dir / "validation" / c).glob("*.jpg"))[0] for c in CLASSES]


def keras_features(
    python: Path, weights: Path, size: int, photos: list[Path], out: Path
) -> np.ndarray:
    """Keras' pooled features of ``photos`` at ``size``, computed by the main venv."""
    script = REPO / "tests_torch" / "keras_features.py"
    result = subprocess.run(
        [str(python), str(script), str(weights), str(size), str(out), *map(str, photos)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out)


@pytest.fixture(scope="session")
def keras_features_150(keras_python, xception_weights, parity_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("keras") / "features-150.npy"
    return keras_features(keras_python, xception_weights, 150, parity_photos, out)


@pytest.fixture(scope="session")
def ported_base(xception_weights):
    from torch_training.port import pretrained_base

    return pretrained_base(xception_weights)


TINY_SIZE = 80  # even, so three of the four pools pad asymmetrically
TINY_CLASSES = ("hat", "pants", "shoes")


@pytest.fixture(scope="session")
def tiny_data(data_dir, tmp_path_factory) -> Path:
    """Four real photos per class and split, of three classes."""
    from tests.datasets import copy_subset

    return copy_subset(data_dir, tmp_path_factory.mktemp("tiny") / "data", TINY_CLASSES, 4)


@pytest.fixture(scope="session")
def tiny_options(tiny_data, xception_weights, tmp_path_factory):
    from torch_training.commands import Options
    from training.config import RunConfig

    root = tmp_path_factory.mktemp("tiny-run")
    return Options(
        data_dir=tiny_data,
        weights=xception_weights,
        output_dir=root / "training",
        cache_dir=root / "cache",
        device="cpu",
        run=RunConfig(image_size=TINY_SIZE, epochs=3, size_inner=16, droprate=0.2, seed=3),
    )


@pytest.fixture(scope="session")
def tiny_trained(tiny_options):
    """``python -m torch_training train``'s work on the tiny dataset: the manifest's folder."""
    from torch_training import commands

    assert commands.train(tiny_options) == 0
    return tiny_options.output_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_trained, tiny_options) -> Path:
    """The tiny run exported, verified on every validation photo, int8 attempted.

    On 12 photos int8 may miss its one-point gate; convert's pipeline then says so (the
    fp32 model is in place and served), as ``python -m convert --int8`` does.
    """
    from convert.errors import VerificationError
    from torch_training import commands

    output = tiny_trained.parent / "model" / "model.onnx"
    try:
        assert commands.export(tiny_options, None, output, int8=True, calibration_images=12) == 0
    except VerificationError as exc:
        assert "variant(s) int8 rejected" in str(exc)
    return output
