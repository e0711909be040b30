"""Pooled base features of every labelled photo, per *view*: the photo, its mirror image,
a closer shot (the central 80%, scaled back up).

A view is a fixed transform of the decoded 299 px pixels. The base is frozen, so a view's
features never change: each is computed once per (view, image size, base weights, data)
and cached beside the fast path's own features (the ``orig`` view *is* that cache, same
file names, so a ``python -m training train`` run and cross-validation share it).

Photos are decoded, transformed and pushed through the base a batch at a time: no whole
split of pixels is ever held in memory (3,068 train photos at 299 px are 0.8 GB as uint8,
3.3 GB as float32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from lambda_function.preprocessing import scale
from training import data, features
from training.data import Dataset

ZOOM_KEEP = 0.8


def zoom(pixels: np.ndarray, keep: float = ZOOM_KEEP) -> np.ndarray:
    """The central ``keep`` of each photo's height and width, scaled back to its size.

    A closer shot of the garment (``(N, H, W, 3)`` uint8 in and out; bilinear, as Keras'
    ``RandomZoom`` interpolates).
    """
    _, height, width, _ = pixels.shape
    h, w = round(height * keep), round(width * keep)
    top, left = (height - h) // 2, (width - w) // 2
    crops = pixels[:, top : top + h, left : left + w]
    return np.stack(
        [
            np.asarray(Image.fromarray(c).resize((width, height), Image.Resampling.BILINEAR))
            for c in crops
        ]
    )


VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "orig": lambda pixels: pixels,
    "flip": lambda pixels: pixels[:, :, ::-1],  # (N, H, W, 3): mirror left-right
    "zoom": zoom,
}


def view_cache_path(
    cache_dir: Path | None, image_size: int, weights_fp: str, data_fp: str, split: str, view: str
) -> Path | None:
    """Where one split's features of ``view`` live (``orig``: the fast path's own file)."""
    kind = "features" if view == "orig" else f"features_{view}"
    return features.cache_path(cache_dir, image_size, weights_fp, data_fp, split, kind=kind)


def stream_features(
    extractor,
    files: Sequence[Path],
    image_size: int,
    view: str = "orig",
    *,
    batch_size: int = 32,
    desc: str = "features",
    dtype: type = np.float32,
) -> np.ndarray:
    """``extractor``'s output for ``files`` seen through ``view``, decoded per batch."""
    transform = _transform(view)
    out: np.ndarray | None = None
    with tqdm(total=len(files), desc=desc, unit="img") as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            pixels = np.stack([data.decode_file(path, image_size) for path in chunk])
            batch = np.ascontiguousarray(transform(pixels))
            result = np.asarray(extractor.predict_on_batch(scale(batch)))
            if out is None:
                out = np.empty((len(files), *result.shape[1:]), dtype=dtype)
            out[start : start + len(chunk)] = result
            bar.update(len(chunk))
    if out is None:
        raise ValueError("Expected at least one image file. Received none.")
    return out


def split_view_features(
    dataset: Dataset,
    split: str,
    view: str,
    image_size: int,
    extractor: Callable[[], object],
    cache_dir: Path | None,
    weights_fp: str,
) -> np.ndarray:
    """One split's features of ``view``: from the cache, else computed (and cached)."""
    _transform(view)
    files = dataset[split].files
    path = view_cache_path(cache_dir, image_size, weights_fp, dataset.fingerprint, split, view)
    if path is not None and path.is_file():
        cached = np.load(path)
        if len(cached) == len(files):
            return cached
    computed = stream_features(
        extractor(), files, image_size, view, desc=f"features[{view}] {split}@{image_size}"
    )
    if path is not None:
        data.save_array(path, computed)
    return computed


def _transform(view: str) -> Callable[[np.ndarray], np.ndarray]:
    if view not in VIEWS:
        raise ValueError(f"Expected a view among {', '.join(VIEWS)}. Received: {view!r}")
    return VIEWS[view]


def labelled_features(
    dataset: Dataset,
    views: Sequence[str],
    image_size: int,
    weights: str | Path | None,
    cache_dir: Path | None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every labelled photo (all splits, in order) as ``{view: (N, 2048)}`` and targets ``(N,)``.

    The base is built only if some view of some split is not cached yet.
    """
    weights_fp = features.weights_fingerprint(weights)
    built: list = []

    def extractor():
        if not built:
            from training.model import make_base, make_feature_extractor

            built.append(make_feature_extractor(make_base(image_size, weights)))
        return built[0]

    by_view = {
        view: np.concatenate(
            [
                split_view_features(
                    dataset, split, view, image_size, extractor, cache_dir, weights_fp
                )
                for split in dataset.splits
            ]
        )
        for view in views
    }
    targets = np.concatenate([dataset[split].targets for split in dataset.splits])
    return by_view, targets
