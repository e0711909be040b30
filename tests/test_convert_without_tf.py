"""Conversion's TF-free half: verify an ONNX model against a plain function, no TensorFlow.

What a model trained elsewhere (PyTorch) reuses: the metadata writer, the verification
against a reference function on real photos, and the serving session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, sys
from pathlib import Path

import pytest

import numpy as np
import onnx

from convert.images import Photo
from convert.metadata import attach_metadata
from convert.verify import serving_inputs, verify_model
from lambda_function.model_metadata import ModelMetadata
from tests.lambda_testing import LABELS, build_model

path = build_model(Path(sys.argv[1]) / "tiny.onnx", image_size=32, metadata={})
proto = onnx.load(str(path))
attach_metadata(proto, ModelMetadata(labels=LABELS, image_size=32))
onnx.save(proto, str(path))
weights = np.zeros((3, len(LABELS)), dtype=np.float32)
weights[[0, 1, 2], [0, 1, 2]] = 8.0


def reference(x):
    return x.mean(axis=(1, 2)) @ weights


def wrong(x):
    return reference(x) * 1.01


photos = [Photo(Path(p)) for p in sys.argv[2:]]
good = verify_model(path, reference, photos, inputs=serving_inputs, tolerance=1e-4)
bad = verify_model(path, wrong, photos, inputs=serving_inputs, tolerance=1e-4)
print(json.dumps({
    "good": good.passed,
    "bad": bad.passed,
    "n": good.parity.n_images,
    "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules,
}))
"""


def test_verification_against_a_plain_function_needs_no_tensorflow(
    tmp_path: Path, data_dir: Path
) -> None:
    photos = [str(sorted((data_dir / "test" / c).iterdir())[0]) for c in ("hat", "pants")]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), *photos],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"good": True, "bad": False, "n": 2, "tensorflow": False}


def tiny_verified_model(tmp_path: Path) -> Path:
    import onnx

    from convert.metadata import attach_metadata
    from lambda_function.model_metadata import ModelMetadata
    from tests.lambda_testing import LABELS, build_model

    path = build_model(tmp_path / "tiny.onnx", image_size=32, metadata={})
    proto = onnx.load(str(path))
    attach_metadata(proto, ModelMetadata(labels=LABELS, image_size=32))
    onnx.save(proto, str(path))
    return path


def test_verification_checks_a_few_photos_at_a_time_with_the_same_figures(
    tmp_path: Path, data_dir: Path, monkeypatch
) -> None:
    import numpy as np

    from convert import verify
    from convert.errors import ConvertError
    from convert.images import Photo
    from tests.lambda_testing import LABELS

    path = tiny_verified_model(tmp_path)
    weights = np.zeros((3, len(LABELS)), dtype=np.float32)
    weights[[0, 1, 2], [0, 1, 2]] = 8.0
    batches: list[int] = []

    def reference(x):
        batches.append(len(x))
        return x.mean(axis=(1, 2)) @ weights

    classes = ("hat", "pants", "shoes", "skirt", "dress")
    photos = [Photo(sorted((data_dir / "test" / c).iterdir())[0]) for c in classes]
    check = dict(inputs=verify.serving_inputs, keep_inputs=True)
    whole = verify.verify_model(path, reference, photos, **check)
    assert batches == [5]

    batches.clear()
    monkeypatch.setattr(verify, "CHUNK", 2)
    chunked = verify.verify_model(path, reference, photos, **check)
    assert batches == [2, 2, 1]  # never more than CHUNK photos in memory at once
    assert chunked.passed and whole.passed
    np.testing.assert_array_equal(chunked.inputs, whole.inputs)
    np.testing.assert_array_equal(chunked.keras_logits, whole.keras_logits)
    assert chunked.names == whole.names
    assert chunked.user_path.n_images == whole.user_path.n_images == 5
    dropped = verify.verify_model(path, reference, photos, inputs=verify.serving_inputs)
    assert dropped.inputs.size == 0

    with pytest.raises(ConvertError, match="at least one photo"):
        verify.verify_model(path, reference, [], inputs=verify.serving_inputs)
