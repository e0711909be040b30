"""Training-time augmentation with Keras 3 preprocessing layers (train split only).

The layers run inside the ``tf.data`` pipeline on float pixels in [0, 255], before
scaling, and never inside the saved model: the checkpoint stays exactly the graph that
is converted and served (no random ops for tf2onnx to trip on, nothing that could be
left switched on at inference).
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


def make_augmenter(aug: Augmentation, seed: int | None = None):
    """A ``keras.Sequential`` of the layers for ``aug`` (on [0, 255] pixels); ``None`` if off."""
    _validate(aug)
    if not aug.enabled:
        return None
    import keras  # here, so that `--help` does not wait for TensorFlow
    from keras import layers

    stack = []
    if aug.flip:
        stack.append(layers.RandomFlip("horizontal", seed=seed))
    if aug.rotation:
        stack.append(layers.RandomRotation(aug.rotation, fill_mode="nearest", seed=seed))
    if aug.shift:
        stack.append(layers.RandomTranslation(aug.shift, aug.shift, fill_mode="nearest", seed=seed))
    if aug.shear:
        stack.append(
            layers.RandomShear(
                x_factor=aug.shear, y_factor=aug.shear, fill_mode="nearest", seed=seed
            )
        )
    if aug.zoom:
        stack.append(layers.RandomZoom(aug.zoom, fill_mode="nearest", seed=seed))
    if aug.patch:
        stack.append(
            layers.RandomErasing(
                factor=aug.patch, scale=(0.02, 0.2), fill_value=0.0, value_range=(0, 255), seed=seed
            )
        )
    return keras.Sequential(stack, name="augmentation")


def _validate(aug: Augmentation) -> None:
    for name in ("rotation", "shift", "shear", "zoom", "patch"):
        value = getattr(aug, name)
        if not 0 <= value <= 1:
            raise ValueError(f"Expected augmentation {name} in [0, 1]. Received: {name}={value}")
