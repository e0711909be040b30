"""Port Keras' ImageNet Xception weights (a ``.weights.h5`` file) into :class:`Xception`.

Keras 3 stores variables under per-class counters, not layer names:
``layers/conv2d[_i]/vars/0`` (HWIO kernels), ``layers/separable_conv2d[_i]/vars/{0,1}``
(depthwise ``(3, 3, C, 1)`` and pointwise ``(1, 1, Cin, Cout)``) and
``layers/batch_normalization[_i]/vars/{0..3}`` (gamma, beta, moving mean, moving
variance). Each counter follows ``base.layers`` order, which
:meth:`Xception.keras_order` reproduces, so h5py alone is enough: no Keras here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torch_training.xception import SeparableConv, Xception

EXPECTED_VALUES = 20_861_480  # parameters + BatchNorm running statistics


class WeightsError(ValueError):
    """The weights file is not Keras' Xception without its top."""


def load_keras_weights(model: Xception, path: str | Path) -> Xception:
    """Copy every weight of the Keras file at ``path`` into ``model``; returns ``model``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"Expected the Keras Xception weights file (include_top=False, .weights.h5; "
            f"env XCEPTION_WEIGHTS). Received: {str(path)!r}, which does not exist"
        )
    with h5py.File(path, "r") as file:
        if "layers" not in file:
            raise WeightsError(f"Expected a Keras 3 .weights.h5 file. Received: {path}")
        counters: Counter[str] = Counter()
        copied = 0
        with torch.no_grad():
            for layer in model.keras_order():
                copied += _copy(file["layers"], layer, counters, path)
        in_file = sum(1 for k in file["layers"] if k.startswith(tuple(counters)))
    if copied != EXPECTED_VALUES or in_file != counters.total():
        raise WeightsError(
            f"Expected {EXPECTED_VALUES:,} values in {in_file} layers of {path}. "
            f"Received: {copied:,} values copied into {counters.total()} layers"
        )
    return model


def pretrained_base(path: str | Path) -> Xception:
    """A base with the ImageNet weights at ``path``, in eval mode and frozen."""
    base = load_keras_weights(Xception(), path).eval()
    base.requires_grad_(False)
    return base


def _next_name(counters: Counter[str], prefix: str) -> str:
    """Keras' per-class name: ``prefix``, then ``prefix_1``, ``prefix_2``, ..."""
    index = counters[prefix]
    counters[prefix] += 1
    return f"{prefix}_{index}" if index else prefix


def _copy(layers, layer: nn.Module, counters: Counter[str], path: Path) -> int:
    if isinstance(layer, SeparableConv):
        name = _next_name(counters, "separable_conv2d")
        depthwise, pointwise = _read(layers, name, 2, path)
        _assign(layer.depthwise.weight, depthwise.transpose(2, 3, 0, 1), name)
        _assign(layer.pointwise.weight, pointwise.transpose(3, 2, 0, 1), name)
        return depthwise.size + pointwise.size
    if isinstance(layer, nn.Conv2d):
        name = _next_name(counters, "conv2d")
        (kernel,) = _read(layers, name, 1, path)
        _assign(layer.weight, kernel.transpose(3, 2, 0, 1), name)
        return kernel.size
    if isinstance(layer, nn.BatchNorm2d):
        name = _next_name(counters, "batch_normalization")
        values = _read(layers, name, 4, path)
        targets = (layer.weight, layer.bias, layer.running_mean, layer.running_var)
        for target, value in zip(targets, values, strict=True):
            _assign(target, value, name)
        return sum(v.size for v in values)
    raise TypeError(f"Expected a Conv2d, SeparableConv or BatchNorm2d. Received: {layer!r}")


def _read(layers, name: str, count: int, path: Path) -> list[np.ndarray]:
    if name not in layers:
        raise WeightsError(f"Expected layer {name!r} in {path}. It is missing")
    return [np.asarray(layers[name]["vars"][str(i)], dtype=np.float32) for i in range(count)]


def _assign(target: torch.Tensor, value: np.ndarray, name: str) -> None:
    if tuple(target.shape) != value.shape:
        raise WeightsError(
            f"Expected {name} of shape {tuple(target.shape)} (after transposing). "
            f"Received: {value.shape}"
        )
    target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
