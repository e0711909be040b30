"""``tf.data`` pipelines: cached uint8 pixels in, scaled (and, for train, augmented) batches out.

Scaling is :func:`lambda_function.preprocessing.scale` written in TensorFlow: the same
float32 operations (``x / 127.5 - 1``), so the result is bit-identical (tested).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def tf_scale(pixels: tf.Tensor) -> tf.Tensor:
    """``preprocessing.scale`` in TensorFlow: float32 ``x / 127.5 - 1``."""
    x = tf.cast(pixels, tf.float32)
    return x / tf.constant(127.5, tf.float32) - tf.constant(1.0, tf.float32)


def make_dataset(
    pixels: np.ndarray,
    targets: np.ndarray,
    n_classes: int,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    augmenter: keras.Model | None = None,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of ``(scaled pixels, one-hot targets)``; shuffled and augmented if asked.

    Augmentation runs on float pixels in [0, 255] before scaling; pass an ``augmenter``
    for the train split only.
    """
    onehot = keras.utils.to_categorical(targets, n_classes).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((pixels, onehot))
    if shuffle:
        ds = ds.shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmenter is not None:
        ds = ds.map(
            lambda x, y: (augmenter(tf.cast(x, tf.float32), training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.map(lambda x, y: (tf_scale(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def array_batches(
    x: np.ndarray,
    targets: np.ndarray,
    n_classes: int,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
    rows: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches ``(float32 x, one-hot targets)`` read from ``x`` in place, one at a time.

    For large cached arrays (fine-tuning activations: 1.6 GB per copy of the train split
    at 299 px): ``fit(x, y)`` and ``from_tensor_slices`` copy the whole array into tensors,
    several times over; this keeps only the numpy array and one batch in memory.
    ``rows`` (sorted) reads only those rows of ``x`` and ``targets``, without copying them.
    """
    rows = np.arange(len(x)) if rows is None else rows
    n, shape = len(rows), x.shape[1:]

    def take(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = rows[np.sort(indices)]  # sorted reads are faster; batch order is irrelevant
        onehot = np.eye(n_classes, dtype=np.float32)[targets[indices]]
        return x[indices].astype(np.float32), onehot

    def load(indices: tf.Tensor):
        batch, onehot = tf.numpy_function(take, [indices], (tf.float32, tf.float32))
        batch.set_shape((None, *shape))
        onehot.set_shape((None, n_classes))
        return batch, onehot

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(load).prefetch(2)
