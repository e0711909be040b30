"""The dataset and weights fixtures both suites share, and small real datasets for tests.

The dataset and the weights come from the environment (``DATA_DIR``, ``XCEPTION_WEIGHTS``),
exactly as the Makefile and CI pass them. A missing one fails the test loudly: a check
that is skipped is not a check. ``tests/conftest.py`` and ``tests_torch/conftest.py``
import the fixtures from here (this module needs only pytest: the torch venv has no
Hypothesis).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The clothing dataset root (``DATA_DIR``), with its three splits."""
    path = Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small"))
    missing = [split for split in SPLITS if not (path / split).is_dir()]
    if missing:
        pytest.fail(
            f"Expected the dataset at DATA_DIR={path} with {', '.join(SPLITS)}/. "
            f"Missing: {', '.join(missing)}. Run `make data` or set DATA_DIR."
        )
    return path.resolve()  # absolute: tests that change directory still find it


@pytest.fixture(scope="session")
def xception_weights() -> Path:
    """The ImageNet Xception base weights file (``XCEPTION_WEIGHTS``)."""
    value = os.environ.get("XCEPTION_WEIGHTS", "")
    if not value or value == "imagenet" or not Path(value).is_file():
        pytest.fail(
            "Expected XCEPTION_WEIGHTS to name a local .weights.h5 file (tests do not "
            f"download). Received: {value!r}"
        )
    return Path(value).resolve()


def copy_subset(source: Path, target: Path, classes: Iterable[str], per_class: int) -> Path:
    """The first ``per_class`` photos of each class and split of ``source``, under ``target``."""
    for split in SPLITS:
        for label in classes:
            (target / split / label).mkdir(parents=True)
            for image in sorted((source / split / label).iterdir())[:per_class]:
                shutil.copy(image, target / split / label / image.name)
    return target
