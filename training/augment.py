"""Online augmentation settings of the PyTorch port (``torch_training``), free of any framework.

The Keras path has no online augmentation any more: it tied at about 200x the cost
(``docs/results/training-2026-11-29.md``; the Keras layers are at commit 161120f).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations are on, and how strong. All zero/False: no augmentation.

    Fractions are of the image size; angles of a full turn (Keras' convention).
    """

    flip: bool = False  # random horizontal flip
    rotation: float = 0.0  # max rotation, fraction of 360 degrees (0.05 = 18 degrees)
    shift: float = 0.0  # max width/height shift, fraction of the size
    shear: float = 0.0  # max shear intensity
    zoom: float = 0.0  # max zoom in/out, fraction of the size
    patch: float = 0.0  # probability of one random black patch (random erasing)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        on = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name)]
        return ", ".join(on) or "none"


COURSE = Augmentation(flip=True, shear=0.1, zoom=0.1)
"""What the course's final 299 model trained with (shear, zoom, horizontal flip)."""

ALL = Augmentation(flip=True, rotation=0.05, shift=0.1, shear=0.1, zoom=0.1, patch=0.5)
