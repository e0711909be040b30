"""The ported ImageNet base gives Keras' features: max |Δ| <= 1e-5 on real photos."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lambda_function.preprocessing import preprocess_batch
from tests_torch.conftest import keras_features
from torch_training.port import EXPECTED_VALUES, WeightsError, load_keras_weights
from torch_training.xception import Xception

PARITY = 1e-5


def pooled(base: Xception, photos: list[Path], size: int) -> np.ndarray:
    x = preprocess_batch([p.read_bytes() for p in photos], size)
    with torch.inference_mode():
        return base.pooled(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


def test_every_value_of_the_file_is_ported(ported_base) -> None:
    params = sum(p.numel() for p in ported_base.parameters())
    stats = sum(b.numel() for name, b in ported_base.named_buffers() if "running" in name)
    assert params + stats == EXPECTED_VALUES
    assert params == 20_806_952


def test_ported_base_matches_keras_at_150(ported_base, parity_photos, keras_features_150) -> None:
    ours = pooled(ported_base, parity_photos, 150)
    assert np.abs(ours - keras_features_150).max() <= PARITY
    assert np.abs(keras_features_150).max() > 1.0  # real features, not zeros


@pytest.mark.slow
def test_ported_base_matches_keras_at_299(
    ported_base, parity_photos, keras_python, xception_weights, tmp_path
) -> None:
    reference = keras_features(
        keras_python, xception_weights, 299, parity_photos, tmp_path / "f299.npy"
    )
    assert np.abs(pooled(ported_base, parity_photos, 299) - reference).max() <= PARITY


def test_a_file_that_is_not_the_xception_base_is_refused(tmp_path) -> None:
    path = tmp_path / "other.weights.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3, 3, 16), np.float32))
    with pytest.raises(WeightsError, match=r"Expected conv2d of shape \(32, 3, 3, 3\)"):
        load_keras_weights(Xception(), path)


def test_a_missing_file_names_the_setting(tmp_path) -> None:
    with pytest.raises(WeightsError, match="XCEPTION_WEIGHTS"):
        load_keras_weights(Xception(), tmp_path / "missing.h5")


def test_onnxruntime_features_equal_torchs(ported_base, parity_photos, tmp_path) -> None:
    from torch_training.features import onnx_pooled

    x = preprocess_batch([p.read_bytes() for p in parity_photos], 80)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    run = onnx_pooled(ported_base, 80, tmp_path / "base.onnx")
    with torch.inference_mode():
        expected = ported_base.pooled(nchw).numpy()
    # float32 rounding: up to ~1e-5 on features near 1 (1.07e-5 seen), so relative too
    np.testing.assert_allclose(run(nchw).numpy(), expected, rtol=1e-5, atol=1e-5)
