"""Xception in PyTorch, faithful to Keras' ``keras.applications.Xception`` (no top).

Two details decide whether the ported ImageNet weights give Keras' features, and both
are pinned by tests (``tests_torch/test_traps.py``):

* every BatchNorm has Keras' ``epsilon=1e-3`` (torch's default 1e-5 moves the pooled
  features by up to 0.1);
* the four 3x3 stride-2 max-pools use TensorFlow's ``"same"`` padding, which is
  asymmetric on an even input: nothing before, one pixel after. The pad repeats the
  edge (``mode="replicate"``), which cannot change a maximum over a window that holds
  the edge pixel anyway. Padding with ``-inf`` is exact in float32 too, but an
  infinite activation wrecks int8 calibration.

The 1x1 stride-2 residual convolutions need no padding ("same" and "valid" agree), and
the 3x3 stride-1 separable convolutions are "same", padding 1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

BN_EPSILON = 1e-3  # Keras' BatchNormalization default; torch's is 1e-5
BN_MOMENTUM = 0.01  # Keras momentum 0.99, in torch's convention
N_FEATURES = 2048
MIN_IMAGE_SIZE = 71


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


def same_pool_padding(size: int, kernel: int = 3, stride: int = 2) -> tuple[int, int]:
    """TensorFlow's ``"same"`` padding (before, after) of one spatial dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameMaxPool(nn.Module):
    """``MaxPooling2D(3, strides=2, padding="same")`` of Keras, with replicated edges."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_pool_padding(int(x.shape[-2]))
        left, right = same_pool_padding(int(x.shape[-1]))
        x = functional.pad(x, (left, right, top, bottom), mode="replicate")
        return functional.max_pool2d(x, kernel_size=3, stride=2)


class SeparableConv(nn.Module):
    """Keras' ``SeparableConv2D(out, 3, padding="same", use_bias=False)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class StridedBlock(nn.Module):
    """Two separable convolutions, a "same" max-pool, plus a strided 1x1 shortcut."""

    def __init__(self, in_channels: int, mid: int, out: int, *, first_relu: bool = True) -> None:
        super().__init__()
        self.first_relu = first_relu
        self.sepconv1, self.bn1 = SeparableConv(in_channels, mid), batch_norm(mid)
        self.sepconv2, self.bn2 = SeparableConv(mid, out), batch_norm(out)
        self.pool = SameMaxPool()
        self.shortcut = nn.Conv2d(in_channels, out, 1, stride=2, bias=False)
        self.shortcut_bn = batch_norm(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut_bn(self.shortcut(x))
        y = functional.relu(x) if self.first_relu else x
        y = self.bn1(self.sepconv1(y))
        y = self.bn2(self.sepconv2(functional.relu(y)))
        return self.pool(y) + residual

    def keras_order(self) -> list[nn.Module]:
        """Weighted layers as Keras lists them: the block's own, then the shortcut's."""
        return [self.sepconv1, self.bn1, self.sepconv2, self.bn2, self.shortcut, self.shortcut_bn]


class MiddleBlock(nn.Module):
    """Three ReLU-separable-BN steps around an identity shortcut (728 channels)."""

    def __init__(self, channels: int = 728) -> None:
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv(channels, channels) for _ in range(3))
        self.bns = nn.ModuleList(batch_norm(channels) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for conv, bn in zip(self.convs, self.bns, strict=True):
            y = bn(conv(functional.relu(y)))
        return y + x

    def keras_order(self) -> list[nn.Module]:
        return [m for pair in zip(self.convs, self.bns, strict=True) for m in pair]


class Xception(nn.Module):
    """The base: NCHW float32 in [-1, 1] to the (N, 2048, h, w) feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 32, 3, stride=2, bias=False), batch_norm(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3, bias=False), batch_norm(64)
        self.block2 = StridedBlock(64, 128, 128, first_relu=False)
        self.block3 = StridedBlock(128, 256, 256)
        self.block4 = StridedBlock(256, 728, 728)
        self.middle = nn.Sequential(*(MiddleBlock() for _ in range(8)))  # blocks 5 to 12
        self.block13 = StridedBlock(728, 728, 1024)
        self.sepconv14a, self.bn14a = SeparableConv(1024, 1536), batch_norm(1536)
        self.sepconv14b, self.bn14b = SeparableConv(1536, 2048), batch_norm(2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit_flow(self.entry_flow(x))

    def entry_flow(self, x: torch.Tensor) -> torch.Tensor:
        """Input to the output of block 12 (where fine-tuning from block 13 starts)."""
        x = functional.relu(self.bn1(self.conv1(x)))
        x = functional.relu(self.bn2(self.conv2(x)))
        x = self.block4(self.block3(self.block2(x)))
        return self.middle(x)

    def exit_flow(self, x: torch.Tensor) -> torch.Tensor:
        """Block 12's output to the final feature map (blocks 13 and 14)."""
        x = self.block13(x)
        x = functional.relu(self.bn14a(self.sepconv14a(x)))
        return functional.relu(self.bn14b(self.sepconv14b(x)))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling of the feature map: the (N, 2048) features."""
        return self(x).mean(dim=(2, 3))

    def keras_order(self) -> list[nn.Module]:
        """Every weighted layer in the order of Keras' ``base.layers``."""
        layers: list[nn.Module] = [self.conv1, self.bn1, self.conv2, self.bn2]
        for block in (self.block2, self.block3, self.block4, *self.middle, self.block13):
            layers += block.keras_order()
        return [*layers, self.sepconv14a, self.bn14a, self.sepconv14b, self.bn14b]
