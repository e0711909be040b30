"""Training-time augmentation in plain torch ops, on the train split only.

The same :class:`training.augment.Augmentation` settings as the Keras path (flip,
rotation, shift, shear, zoom, black patch), applied to a batch of scaled NCHW images in
[-1, 1]: one random affine transform per image (``affine_grid`` + ``grid_sample``,
edges repeated like Keras' ``fill_mode="nearest"``), then random erasing with black
(-1). Nothing here is part of the exported model.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from training.augment import Augmentation

BLACK = -1.0  # pixel 0 after scaling to [-1, 1]


def augment(x: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """A randomly transformed copy of the batch ``x`` (N, 3, H, W); ``x`` is untouched."""
    _check(aug)
    if not aug.enabled:
        return x
    n = x.shape[0]
    if aug.rotation or aug.shift or aug.shear or aug.zoom:
        theta = _affine(n, aug, generator).to(x.device, x.dtype)
        grid = functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = functional.grid_sample(
            x, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
    if aug.flip:
        flip = _uniform(n, generator) < 0.5
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    if aug.patch:
        x = _erase(x, aug.patch, generator)
    return x


def _check(aug: Augmentation) -> None:
    for name in ("rotation", "shift", "shear", "zoom", "patch"):
        value = getattr(aug, name)
        if not 0 <= value <= 1:
            raise ValueError(f"Expected augmentation {name} in [0, 1]. Received: {name}={value}")


def _affine(n: int, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """(N, 2, 3) matrices mapping output to input coordinates in [-1, 1]."""
    angle = _symmetric(n, aug.rotation * 2 * math.pi, generator)
    shear = _symmetric(n, aug.shear, generator)
    zoom = 1 + _symmetric(n, aug.zoom, generator)
    shift_x, shift_y = (_symmetric(n, 2 * aug.shift, generator) for _ in range(2))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = zoom * (cos - sin * shear)
    theta[:, 0, 1] = zoom * (-sin + cos * shear)
    theta[:, 1, 0] = zoom * sin
    theta[:, 1, 1] = zoom * cos
    theta[:, 0, 2], theta[:, 1, 2] = shift_x, shift_y
    return theta


def _erase(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """One black rectangle (2-20% of the area) per image, with ``probability``."""
    x = x.clone()
    n, _, height, width = x.shape
    for i in range(n):
        if _uniform(1, generator).item() >= probability:
            continue
        area = (0.02 + 0.18 * _uniform(1, generator).item()) * height * width
        ratio = math.exp((_uniform(1, generator).item() - 0.5) * math.log(3))
        h = max(1, min(height, round(math.sqrt(area * ratio))))
        w = max(1, min(width, round(math.sqrt(area / ratio))))
        top = int(_uniform(1, generator).item() * (height - h + 1))
        left = int(_uniform(1, generator).item() * (width - w + 1))
        x[i, :, top : top + h, left : left + w] = BLACK
    return x


def _uniform(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator)


def _symmetric(n: int, limit: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform in [-limit, limit]."""
    return (2 * _uniform(n, generator) - 1) * limit
