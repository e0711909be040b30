"""Which checkpoint `python -m convert` picks from a training folder, and what it learns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from convert.checkpoint import find_checkpoint
from convert.errors import ConvertError
from convert.images import Photo, spread_sample
from lambda_function.files import sha256_file

LABELS = ["dress", "hat", "pants"]


def write_run(root: Path, name: str, accuracy: float, size: int = 71, labels=LABELS) -> dict:
    checkpoint = root / "checkpoints" / f"{name}.h5"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(name.encode() * 100)
    return {
        "name": name,
        "config": {"image_size": size},
        "labels": list(labels),
        "best_checkpoint": f"checkpoints/{name}.h5",
        "best_val_accuracy": accuracy,
        "history": {},
        "fingerprint": {},
    }


def write_manifest(root: Path, runs: list[dict], **extra) -> Path:
    path = root / "manifest.json"
    path.write_text(json.dumps({"runs": runs, **extra}))
    return path


def test_without_best_run_the_highest_validation_accuracy_wins(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, n, a) for n, a in (("a", 0.81), ("b", 0.87), ("c", 0.84))]
    write_manifest(tmp_path, runs)
    checkpoint = find_checkpoint(tmp_path)
    assert checkpoint.run == "b"
    assert checkpoint.path == tmp_path / "checkpoints" / "b.h5"
    assert checkpoint.val_accuracy == 0.87
    assert checkpoint.labels == tuple(LABELS)
    assert checkpoint.image_size == 71


def test_best_run_names_the_run_to_ship(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, "a", 0.9), write_run(tmp_path, "final", 0.88, size=299)]
    write_manifest(tmp_path, runs, best_run="final")
    checkpoint = find_checkpoint(tmp_path / "manifest.json")
    assert (checkpoint.run, checkpoint.image_size) == ("final", 299)


def test_an_explicit_run_overrides_best_run(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, "a", 0.9), write_run(tmp_path, "b", 0.8)]
    write_manifest(tmp_path, runs, best_run="a")
    assert find_checkpoint(tmp_path, run="b").run == "b"
    with pytest.raises(ConvertError, match=r"no run named 'zz'\. Runs: a, b"):
        find_checkpoint(tmp_path, run="zz")


def test_the_checkpoint_sha256_is_that_of_the_file(tmp_path: Path) -> None:
    write_manifest(tmp_path, [write_run(tmp_path, "a", 0.5)])
    data = (tmp_path / "checkpoints" / "a.h5").read_bytes()
    assert find_checkpoint(tmp_path).sha256 == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "checkpoints" / "a.h5") == hashlib.sha256(data).hexdigest()


def test_an_h5_named_by_a_manifest_gets_that_runs_labels(tmp_path: Path) -> None:
    write_manifest(tmp_path, [write_run(tmp_path, "a", 0.5), write_run(tmp_path, "b", 0.6)])
    checkpoint = find_checkpoint(tmp_path / "checkpoints" / "a.h5")
    assert (checkpoint.run, checkpoint.labels, checkpoint.val_accuracy) == (
        "a",
        ("dress", "hat", "pants"),
        0.5,
    )


def test_a_bare_h5_needs_labels_and_takes_its_size_from_the_model(tmp_path: Path) -> None:
    model = tmp_path / "model.h5"
    model.write_bytes(b"x")
    with pytest.raises(ConvertError, match=r"model\.h5: .*Pass --labels"):
        find_checkpoint(model)
    checkpoint = find_checkpoint(model, labels=["a", "b"])
    assert (checkpoint.labels, checkpoint.image_size, checkpoint.run) == (("a", "b"), None, None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a readable JSON training manifest"),
        ('{"runs": []}', "non-empty 'runs' list"),
        ('{"runs": [{"name": "a", "best_val_accuracy": 0.5}]}', "expected 'best_checkpoint'"),
        (
            '{"runs": [{"name": "a", "best_val_accuracy": 0.5, "best_checkpoint": "x.h5", '
            '"labels": ["a", "b"], "config": {"image_size": 71}}]}',
            r"its best checkpoint .*x\.h5 does not exist",
        ),
        (
            '{"runs": [{"name": "a", "best_val_accuracy": 0.5, "best_checkpoint": "x.h5", '
            '"labels": ["a", "b"], "config": {}}]}',
            "expected an integer 'config.image_size'",
        ),
    ],
)
def test_a_malformed_manifest_is_named_in_the_error(tmp_path: Path, content, message) -> None:
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ConvertError, match=message) as info:
        find_checkpoint(tmp_path)
    assert str(tmp_path / "manifest.json") in str(info.value)


def test_a_missing_source_and_a_folder_without_manifest_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match=r"nope\.h5: no such file or folder"):
        find_checkpoint(tmp_path / "nope.h5")
    with pytest.raises(ConvertError, match=r"a folder without manifest\.json"):
        find_checkpoint(tmp_path)


def test_labels_that_contradict_the_manifest_are_refused(tmp_path: Path) -> None:
    write_manifest(tmp_path, [write_run(tmp_path, "a", 0.5)])
    with pytest.raises(ConvertError, match="disagree with the manifest"):
        find_checkpoint(tmp_path, labels=["hat", "dress", "pants"])


def test_the_photo_sample_covers_every_class_and_is_repeatable() -> None:
    photos = [Photo(Path(f"{c}/{i}.jpg"), n) for n, c in enumerate("abc") for i in range(10)]
    sample = spread_sample(photos, 6, seed=1)
    assert sorted(p.label for p in sample) == [0, 0, 1, 1, 2, 2]
    assert sample == spread_sample(photos, 6, seed=1)
    assert spread_sample(photos, None) == photos
