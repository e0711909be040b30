"""The numpy pipeline equals Keras' ``load_img`` + ``preprocess_input``, pixel for pixel.

Every validation image of the real dataset, and synthetic images of every mode, at
both model sizes. Where we deliberately correct ``load_img`` (EXIF orientation,
transparency, 16-bit), Keras is given the corrected image (see ``tests/images.py``);
the corrections themselves are tested in ``test_preprocessing.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images import cases
from tests.parity import SIZES, TOLERANCE, max_abs_diff

CASES = cases()


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_every_validation_image_matches_keras(data_dir: Path, size: int) -> None:
    paths = sorted((data_dir / "validation").glob("*/*"))
    assert len(paths) == 341
    worst = {path.name: max_abs_diff(path.read_bytes(), path.read_bytes(), size) for path in paths}
    off = {name: diff for name, diff in worst.items() if diff > TOLERANCE}
    assert not off, f"{len(off)} of {len(paths)} images differ from Keras: {off}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_synthetic_mode_matches_keras(case, size: int) -> None:
    assert max_abs_diff(case.data, case.reference, size) <= TOLERANCE
