"""The fast path's input: pooled base features, computed once and cached.

With a frozen base and no augmentation the base's output for an image never changes,
so it is computed once per (image size, base weights, data) and the top is trained on
the cached 2048-d vectors: an epoch takes well under a second instead of minutes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from lambda_function import files
from lambda_function.preprocessing import scale
from training import data

IMAGENET_FILE = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"


def weights_fingerprint(weights: str | Path | None) -> str:
    """sha256 of the base weights file; ``imagenet`` hashes Keras' downloaded copy."""
    if weights is None:
        return "random"
    path = Path(weights)
    if weights == "imagenet":
        home = os.environ.get("KERAS_HOME", "~/.keras")
        path = Path(home).expanduser() / "models" / IMAGENET_FILE
        if not path.is_file():
            return "imagenet"
    return files.sha256_file(path)


def extract(
    extractor: keras.Model,
    pixels: np.ndarray,
    *,
    batch_size: int = 32,
    desc: str = "features",
    dtype: type = np.float32,
) -> np.ndarray:
    """``extractor``'s output for uint8 ``pixels`` (scaled here, as serving does), with a bar."""
    out = np.empty((len(pixels), *extractor.output_shape[1:]), dtype=dtype)
    with tqdm(total=len(pixels), desc=desc, unit="img") as bar:
        for start in range(0, len(pixels), batch_size):
            batch = scale(pixels[start : start + batch_size])
            out[start : start + len(batch)] = np.asarray(extractor.predict_on_batch(batch))
            bar.update(len(batch))
    return out


def cached_features(
    extractor: keras.Model,
    pixels: Callable[[], np.ndarray],
    count: int,
    cache_path: Path | None,
    *,
    batch_size: int = 32,
    desc: str = "features",
    dtype: type = np.float32,
) -> np.ndarray:
    """:func:`extract`, read from ``cache_path`` when it holds ``count`` rows, else written.

    ``pixels`` is called only when the features must be computed.
    """
    if cache_path is not None and cache_path.is_file():
        features = np.load(cache_path)
        if len(features) == count:
            return features
    features = extract(extractor, pixels(), batch_size=batch_size, desc=desc, dtype=dtype)
    if cache_path is not None:
        data.save_array(cache_path, features)
    return features


def cache_path(
    cache_dir: Path | None,
    image_size: int,
    weights_fp: str,
    data_fp: str,
    split: str,
    *,
    kind: str = "features",
) -> Path | None:
    """Where one split's ``kind`` of base output lives; ``None`` (no disk cache) for random weights.

    ``kind`` is ``features`` (pooled), or a fine-tuning cut such as ``block13`` (activations).
    """
    if cache_dir is None or weights_fp in ("random", "imagenet"):
        return None
    name = f"{kind}-{image_size}-{weights_fp[:16]}-{data_fp[:16]}-{split}.npy"
    return Path(cache_dir) / name
