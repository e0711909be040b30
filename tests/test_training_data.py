"""The dataset reader: layout, labels, decoded pixels, and errors that name the bad file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from lambda_function import preprocessing
from tests.datasets import copy_subset
from training import data
from training.evaluate import classification_metrics

CLASSES = ("dress", "hat", "pants")


@pytest.fixture
def tiny(tmp_path: Path, data_dir: Path) -> Path:
    """Two real images per class and split, copied from DATA_DIR."""
    return copy_subset(data_dir, tmp_path / "ds", CLASSES, per_class=2)


def test_labels_are_sorted_class_folders_and_targets_follow_them(tiny: Path) -> None:
    ds = data.scan(tiny)
    assert ds.labels == CLASSES
    for split in data.SPLITS:
        assert len(ds[split]) == 6
        assert ds[split].targets.tolist() == [0, 0, 1, 1, 2, 2]
        folders = [p.parent.name for p in ds[split].files]
        assert folders == ["dress", "dress", "hat", "hat", "pants", "pants"]


def test_pixels_are_the_serving_contracts(tiny: Path) -> None:
    ds = data.scan(tiny)
    path = ds["validation"].files[3]
    pixels = data.decode_file(path, 71)
    assert pixels.dtype == np.uint8 and pixels.shape == (71, 71, 3)
    np.testing.assert_array_equal(pixels, preprocessing.load_pixels(path.read_bytes(), 71))


def test_whole_split_pixels_are_cached_on_disk(tiny: Path, tmp_path: Path) -> None:
    ds = data.scan(tiny)
    cache = tmp_path / "cache"
    pixels = data.load_pixels(ds, "validation", 71, cache)
    assert pixels.dtype == np.uint8 and pixels.shape == (6, 71, 71, 3)
    np.testing.assert_array_equal(pixels[3], data.decode_file(ds["validation"].files[3], 71))
    (cached,) = cache.glob("pixels-71-*-validation.npy")
    np.testing.assert_array_equal(np.load(cached), pixels)


def test_fingerprint_changes_when_an_image_changes(tiny: Path) -> None:
    before = data.scan(tiny).fingerprint
    image = next((tiny / "train" / "hat").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert data.scan(tiny).fingerprint != before


def test_missing_split_names_the_folder(tiny: Path) -> None:
    shutil.rmtree(tiny / "test")
    with pytest.raises(data.DatasetError, match=re.escape(str(tiny / "test"))):
        data.scan(tiny)


def test_empty_class_folder_names_the_folder(tiny: Path) -> None:
    for image in (tiny / "validation" / "hat").iterdir():
        image.unlink()
    with pytest.raises(
        data.DatasetError, match=re.escape(f"{tiny / 'validation' / 'hat'}. It is empty")
    ):
        data.scan(tiny)


def test_class_folders_must_match_across_splits(tiny: Path) -> None:
    shutil.rmtree(tiny / "test" / "pants")
    with pytest.raises(data.DatasetError, match="Received: \\['dress', 'hat'\\]"):
        data.scan(tiny)


def test_unreadable_image_names_the_file_and_the_reason(tiny: Path) -> None:
    bad = tiny / "train" / "dress" / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    with pytest.raises(data.DatasetError, match=rf"{re.escape(str(bad))}.*unsupported_image"):
        data.decode_file(bad, 71)


def test_truncated_image_names_the_file(tiny: Path) -> None:
    source = next((tiny / "train" / "hat").iterdir())
    bad = tiny / "train" / "hat" / "truncated.jpg"
    bad.write_bytes(source.read_bytes()[:2000])
    with pytest.raises(data.DatasetError, match=rf"{re.escape(str(bad))}.*corrupt_image"):
        data.decode_file(bad, 71)


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(data.DatasetError, match=r"Missing: .*nowhere"):
        data.scan(tmp_path / "nowhere")


def test_classification_metrics_on_a_known_confusion() -> None:
    targets = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    metrics = classification_metrics(targets, predicted, ("a", "b", "c"))
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics["per_class"]["a"] == {"precision": 2 / 3, "recall": 2 / 3, "support": 3}
    assert metrics["per_class"]["b"] == {"precision": 2 / 3, "recall": 1.0, "support": 2}
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "support": 1}


def test_array_batches_read_only_the_given_rows_once_each_epoch() -> None:
    from training.pipeline import array_batches

    x = np.arange(20, dtype=np.float16).reshape(10, 2)
    targets = np.arange(10) % 3
    rows = np.array([1, 4, 5, 8])
    ds = array_batches(x, targets, 3, batch_size=3, shuffle=True, seed=2, rows=rows)
    for _ in range(2):  # reshuffled, never another row, never a row twice
        batches = list(ds.as_numpy_iterator())
        seen = np.concatenate([b[0] for b in batches])
        onehot = np.concatenate([b[1] for b in batches])
        assert sorted(seen[:, 0] // 2) == rows.tolist() and seen.dtype == np.float32
        assert onehot.argmax(axis=1).tolist() == targets[(seen[:, 0] // 2).astype(int)].tolist()
