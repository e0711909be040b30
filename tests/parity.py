"""The reference pipeline (Keras) and how far ours is from it, for tests and bench."""

from __future__ import annotations

import io

import keras
import numpy as np

from lambda_function.preprocessing import preprocess

SIZES = (150, 299)
TOLERANCE = 1e-6


def keras_input(data: bytes, size: int) -> np.ndarray:
    """What the course feeds Xception: ``load_img`` + ``preprocess_input``, batch of 1."""
    image = keras.utils.load_img(io.BytesIO(data), target_size=(size, size))
    pixels = keras.utils.img_to_array(image, dtype="float32")
    return keras.applications.xception.preprocess_input(pixels)[np.newaxis]


def max_abs_diff(data: bytes, reference: bytes, size: int) -> float:
    """max |ours(data) - keras(reference)| over every pixel and channel."""
    ours, theirs = preprocess(data, size), keras_input(reference, size)
    assert ours.shape == theirs.shape == (1, size, size, 3), (ours.shape, theirs.shape)
    assert ours.dtype == theirs.dtype == np.float32
    return float(np.max(np.abs(ours - theirs)))
