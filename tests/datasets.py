"""Small real datasets for tests: a few photos per class, copied from ``DATA_DIR``."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

SPLITS = ("train", "validation", "test")


def copy_subset(source: Path, target: Path, classes: Iterable[str], per_class: int) -> Path:
    """The first ``per_class`` photos of each class and split of ``source``, under ``target``."""
    for split in SPLITS:
        for label in classes:
            (target / split / label).mkdir(parents=True)
            for image in sorted((source / split / label).iterdir())[:per_class]:
                shutil.copy(image, target / split / label / image.name)
    return target
