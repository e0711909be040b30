"""Real photos for verification, calibration and accuracy: which files, and their labels."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convert.errors import ConvertError
from training import data

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


@dataclass(frozen=True)
class Photo:
    """An image file and, when it comes from a labelled split, its class index."""

    path: Path
    label: int | None = None


def labelled_split(data_dir: Path, split: str, labels: Sequence[str]) -> list[Photo]:
    """Every image of ``data_dir/split/<label>/``, listed as training lists it.

    The listing is :func:`training.data.scan`'s (one rule for what a split holds); each
    class folder must be one of the model's ``labels``.
    """
    try:
        dataset = data.scan(data_dir, splits=(split,))
    except data.DatasetError as exc:
        raise ConvertError(f"{exc} (the {split!r} split; set --data-dir or DATA_DIR)") from exc
    unknown = [name for name in dataset.labels if name not in labels]
    if unknown:
        raise ConvertError(
            f"{data_dir / split}: class folders {unknown} are not among the model's labels "
            f"{list(labels)}"
        )
    found = dataset[split]
    index = [list(labels).index(name) for name in dataset.labels]
    return [Photo(path, index[t]) for path, t in zip(found.files, found.targets, strict=True)]


def collect_images(paths: Sequence[Path]) -> list[Photo]:
    """Image files named directly, or found (recursively) in the folders named."""
    photos: list[Photo] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConvertError(f"{path}: a folder without images ({', '.join(IMAGE_SUFFIXES)})")
            photos.extend(Photo(p) for p in found)
        elif path.is_file():
            photos.append(Photo(path))
        else:
            raise ConvertError(f"{path}: no such image file or folder")
    return photos


def spread_sample(photos: Sequence[Photo], limit: int | None, seed: int = 0) -> list[Photo]:
    """At most ``limit`` photos, drawn in turn from each folder (class) so all are seen.

    The draw is seeded, so the same call picks the same photos.
    """
    if limit is None or limit >= len(photos):
        return list(photos)
    if limit < 1:
        raise ValueError(f"Expected a sample size >= 1. Received: limit={limit}")
    groups: dict[Path, list[Photo]] = {}
    for photo in photos:
        groups.setdefault(photo.path.parent, []).append(photo)
    rng = random.Random(seed)
    for group in groups.values():
        rng.shuffle(group)
    picked: list[Photo] = []
    while len(picked) < limit:
        for group in groups.values():
            if group and len(picked) < limit:
                picked.append(group.pop())
    return sorted(picked, key=lambda p: str(p.path))
