"""The numeric traps of porting Keras' Xception, each pinned by a test that fails if it returns.

* BatchNorm epsilon: Keras 1e-3, torch's default 1e-5;
* "same" max-pool padding on even sizes: TensorFlow pads (0 before, 1 after);
* BatchNorm in training mode: batch statistics instead of ImageNet's;
* ``-inf`` padding: exact in float32, but it ruins int8 calibration.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from tests_torch.test_port import PARITY, pooled
from torch_training.model import Classifier, make_head
from torch_training.to_onnx import nonfinite_constants
from torch_training.xception import BN_EPSILON, SameMaxPool, Xception, same_pool_padding


def test_every_batchnorm_uses_keras_epsilon() -> None:
    norms = [m for m in Xception().modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 40
    assert {m.eps for m in norms} == {BN_EPSILON} == {1e-3}


def test_torch_default_epsilon_would_break_parity(
    ported_base, parity_photos, keras_features_150
) -> None:
    wrong = copy.deepcopy(ported_base)
    for module in wrong.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 1e-5
    assert np.abs(pooled(wrong, parity_photos, 150) - keras_features_150).max() > 1e-3


@pytest.mark.parametrize(
    ("size", "expected"),
    [(147, (1, 1)), (74, (0, 1)), (37, (1, 1)), (72, (0, 1)), (9, (1, 1)), (2, (0, 1))],
)
def test_same_padding_is_tensorflows(size: int, expected: tuple[int, int]) -> None:
    assert same_pool_padding(size) == expected


@pytest.mark.parametrize("size", [8, 9, 36, 37])
def test_same_pool_equals_a_brute_force_tensorflow_pool(size: int) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    before, after = same_pool_padding(size)
    padded = functional.pad(x, (before, after, before, after), value=float("-inf"))
    out = -(-size // 2)
    expected = torch.empty(2, 3, out, out)
    for i in range(out):
        for j in range(out):
            window = padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            expected[:, :, i, j] = window.amax(dim=(2, 3))
    torch.testing.assert_close(SameMaxPool()(x), expected, rtol=0, atol=0)


def test_symmetric_pool_padding_would_break_parity(
    ported_base, parity_photos, keras_features_150, monkeypatch
) -> None:
    def timm_like(self, x):
        return functional.max_pool2d(x, 3, 2, padding=1)

    monkeypatch.setattr(SameMaxPool, "forward", timm_like)
    assert np.abs(pooled(ported_base, parity_photos, 150) - keras_features_150).max() > 1e-2


def test_the_ported_base_is_within_parity(ported_base, parity_photos, keras_features_150) -> None:
    assert np.abs(pooled(ported_base, parity_photos, 150) - keras_features_150).max() <= PARITY


def test_batchnorm_stays_in_eval_mode_while_training(ported_base) -> None:
    model = Classifier(copy.deepcopy(ported_base), make_head(16, 0.0, 3))
    x = torch.rand(4, 3, 80, 80) * 2 - 1
    model.eval()
    with torch.no_grad():
        expected = model(x)
    stats = [b.clone() for name, b in model.base.named_buffers() if "running" in name]
    model.train()
    assert not any(m.training for m in model.base.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            stats, [b for name, b in model.base.named_buffers() if "running" in name], strict=True
        )
    )


def test_training_mode_batchnorm_would_change_the_answers(ported_base) -> None:
    model = Classifier(copy.deepcopy(ported_base), make_head(16, 0.0, 3)).eval()
    x = torch.rand(4, 3, 80, 80) * 2 - 1
    with torch.no_grad():
        expected = model(x)
        nn.Module.train(model.base, True)  # what a plain model.train() would do
        assert not torch.allclose(model(x), expected, atol=1e-3)


def test_the_export_has_no_infinite_constants(tiny_export) -> None:
    import onnx

    proto = onnx.load(str(tiny_export))
    assert nonfinite_constants(proto) == []
    assert any(node.op_type == "Pad" for node in proto.graph.node)  # the "same" pools


def test_an_infinite_pad_is_caught(tmp_path, monkeypatch) -> None:
    import onnx

    from convert.errors import ConvertError
    from torch_training.to_onnx import export_graph, to_onnx

    def minus_inf(self, x):
        before, after = same_pool_padding(int(x.shape[-1]))
        x = functional.pad(x, (before, after, before, after), value=float("-inf"))
        return functional.max_pool2d(x, 3, 2)

    monkeypatch.setattr(SameMaxPool, "forward", minus_inf)
    path = tmp_path / "inf.onnx"
    model = Classifier(Xception(), make_head(0, 0.0, 3)).eval()
    to_onnx(model, 80, path)
    assert nonfinite_constants(onnx.load(str(path)))
    with pytest.raises(ConvertError, match="expected finite constants"):
        export_graph(model, 80)
