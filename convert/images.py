"""Real photos for verification, calibration and accuracy: which files, and their labels."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convert.errors import ConvertError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


@dataclass(frozen=True)
class Photo:
    """An image file and, when it comes from a labelled split, its class index."""

    path: Path
    label: int | None = None


def labelled_split(data_dir: Path, split: str, labels: Sequence[str]) -> list[Photo]:
    """Every image of ``data_dir/split/<label>/``; each class folder must be a label."""
    root = data_dir / split
    if not root.is_dir():
        raise ConvertError(
            f"{root}: no such folder. Expected the {split!r} split of the dataset "
            "(one folder per class); set --data-dir or DATA_DIR"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in labels]
    if unknown:
        raise ConvertError(
            f"{root}: class folders {unknown} are not among the model's labels {list(labels)}"
        )
    photos = [
        Photo(path, labels.index(folder.name))
        for folder in folders
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not photos:
        raise ConvertError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its folders")
    return photos


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
