"""Training's input: the frozen base's output for every labelled photo, computed once, cached.

The base is frozen, so its output for a photo never changes: the pooled 2048-d features
(and, for fine-tuning, the activations entering a block) are computed once per (image
size, base weights, data) and kept as ``.npy`` files, one per split. The head then trains
on the cached vectors: an epoch takes well under a second instead of minutes.

Photos are decoded and pushed through the base a batch at a time: no whole split of
pixels is ever held in memory (3,068 train photos at 299 px are 0.8 GB as uint8, 3.3 GB
as float32).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lambda_function import files
from lambda_function.preprocessing import scale
from training import data
from training.data import Dataset

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


def stream(
    extractor,
    paths: Sequence[Path],
    image_size: int,
    *,
    batch_size: int = 32,
    desc: str = "features",
    dtype: type = np.float32,
) -> np.ndarray:
    """``extractor``'s output for the photos at ``paths``, decoded and scaled per batch."""
    out: np.ndarray | None = None
    with tqdm(total=len(paths), desc=desc, unit="img") as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            pixels = np.stack([data.decode_file(path, image_size) for path in chunk])
            result = np.asarray(extractor.predict_on_batch(scale(pixels)))
            if out is None:
                out = np.empty((len(paths), *result.shape[1:]), dtype=dtype)
            out[start : start + len(chunk)] = result
            bar.update(len(chunk))
    if out is None:
        raise ValueError("Expected at least one image file. Received none.")
    return out


def labelled(
    dataset: Dataset,
    kind: str,
    image_size: int,
    weights: str | Path | None,
    cache_dir: Path | None,
    extractor: Callable[[], object],
    dtype: type = np.float32,
) -> np.ndarray:
    """``kind`` of base output for every labelled photo (all splits, in order), one array.

    Each split is read from its cache file when that holds one row per photo, else
    computed with ``extractor()`` (called once, only then) and cached.
    """
    weights_fp = weights_fingerprint(weights)
    built: list = []
    out: np.ndarray | None = None
    start = 0
    for split in dataset.splits:
        paths = dataset[split].files
        path = cache_path(cache_dir, image_size, weights_fp, dataset.fingerprint, split, kind=kind)
        part: np.ndarray | None = None
        if path is not None and path.is_file():
            part = np.load(path, mmap_mode="r")  # copied straight into ``out`` below
            part = part if len(part) == len(paths) else None
        if part is None:
            if not built:
                built.append(extractor())
            desc = f"{kind} {split}@{image_size}"
            part = stream(built[0], paths, image_size, desc=desc, dtype=dtype)
            if path is not None:
                data.save_array(path, part)
        if out is None:  # one array for every photo: the splits are never held twice
            total = sum(len(dataset[s].files) for s in dataset.splits)
            out = np.empty((total, *part.shape[1:]), dtype=dtype)
        out[start : start + len(part)] = part
        start += len(part)
    if out is None:
        raise ValueError("Expected at least one split of photos. Received none.")
    return out


def labelled_features(
    dataset: Dataset, image_size: int, weights: str | Path | None, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features ``(N, 2048)`` of every labelled photo and their targets ``(N,)``."""

    def extractor():
        from training.model import make_base

        return make_base(image_size, weights)

    x = labelled(dataset, "features", image_size, weights, cache_dir, extractor)
    return x, np.concatenate([dataset[split].targets for split in dataset.splits])
