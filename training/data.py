"""The dataset on disk: splits, labels, and each photo decoded as serving decodes it.

Layout: ``DATA_DIR/{train,validation,test}/<class>/<image>``. Labels are the sorted
class folder names of the train split; the other splits must use the same folders.
Photos are decoded and resized with the serving package's preprocessing contract
(:func:`lambda_function.preprocessing.load_pixels`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lambda_function import files, preprocessing

SPLITS = ("train", "validation", "test")


class DatasetError(ValueError):
    """The dataset folder is not usable; the message names the path at fault."""


@dataclass(frozen=True)
class Split:
    """One split: image files and their class indices, in a stable (sorted) order."""

    name: str
    files: tuple[Path, ...]
    targets: np.ndarray  # int32 class indices, one per file
    groups: tuple[str, ...] = ()
    """A product id per file ("" for none): photos of one product stay in one CV fold."""

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class Dataset:
    """The three splits of one dataset folder, and what identifies its content."""

    root: Path
    labels: tuple[str, ...]
    splits: dict[str, Split]
    fingerprint: str  # sha256 over every file's relative path and content

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]


def scan(
    root: str | Path, splits: tuple[str, ...] = SPLITS, extra: str | Path | None = None
) -> Dataset:
    """List ``root``'s splits and check the layout; raise :class:`DatasetError` if broken.

    ``extra``: a folder of extra labelled photos (``python -m training field-export``),
    added to the first split (:mod:`training.field_data`)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Expected a dataset folder with {', '.join(splits)}/. Missing: {root}")
    labels = _class_folders(root / splits[0])
    found = {}
    for name in splits:
        folder = root / name
        if not folder.is_dir():
            raise DatasetError(
                f"Expected split folder {folder} (with one folder per class). It does not exist."
            )
        classes = _class_folders(folder)
        if classes != labels:
            raise DatasetError(
                f"Expected the class folders of {root / splits[0]} in {folder}: {list(labels)}. "
                f"Received: {list(classes)}"
            )
        files, targets = [], []
        for index, label in enumerate(labels):
            images = sorted(p for p in (folder / label).iterdir() if _is_data_file(p))
            if not images:
                raise DatasetError(f"Expected at least one image in {folder / label}. It is empty.")
            files += images
            targets += [index] * len(images)
        found[name] = Split(name, tuple(files), np.array(targets, dtype=np.int32))
    fingerprint = _fingerprint(root, found)
    if extra is not None:
        found[splits[0]], digest = _with_extra(found[splits[0]], labels, Path(extra))
        fingerprint = hashlib.sha256(f"{fingerprint}+{digest}".encode()).hexdigest()
    return Dataset(root, labels, found, fingerprint)


def _with_extra(split: Split, labels: tuple[str, ...], folder: Path) -> tuple[Split, str]:
    """``split`` with the photos of ``folder`` (``DIR/<category>/<file>``, ``groups.csv``)
    appended with their product ids, and a digest of what was added."""
    from training import field_data

    if not folder.is_dir():
        raise DatasetError(f"Expected an extra-data folder (field-export). Missing: {folder}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _is_data_file(p))
    unknown = sorted(set(classes) - set(labels))
    if unknown:
        raise DatasetError(
            f"Expected the extra data's class folders among the dataset's {list(labels)}. "
            f"Received: {unknown} in {folder}"
        )
    products = field_data.read_groups(folder)
    paths, targets, groups = [], [], []
    digest = hashlib.sha256()
    for label in classes:
        for path in sorted(p for p in (folder / label).iterdir() if _is_data_file(p)):
            relative = f"{label}/{path.name}"
            paths.append(path)
            targets.append(labels.index(label))
            groups.append(products.get(relative, ""))
            digest.update(relative.encode() + bytes.fromhex(files.sha256_file(path)))
    extended = Split(
        split.name,
        split.files + tuple(paths),
        np.concatenate([split.targets, np.array(targets, dtype=np.int32)]),
        (split.groups or ("",) * len(split)) + tuple(groups),
    )
    return extended, digest.hexdigest()


def load_pixels(
    dataset: Dataset, split: str, image_size: int, cache_dir: Path | None = None
) -> np.ndarray:
    """uint8 pixels ``(N, size, size, 3)`` of one split, decoded once and then cached.

    Whole splits in memory: only the PyTorch port's augmented path reads them this way
    (the Keras path streams photos a batch at a time, :mod:`training.features`).
    """
    key = (dataset.fingerprint, split, image_size)
    if key in _MEMORY:
        return _MEMORY[key]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"pixels-{image_size}-{dataset.fingerprint[:16]}-{split}.npy"
    if path is not None and path.is_file():
        pixels = np.load(path)
    else:
        pixels = decode_split(dataset[split], image_size)
        if path is not None:
            save_array(path, pixels)
    _MEMORY[key] = pixels
    return pixels


def save_array(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically: a reader never loads half an array."""

    def write(staged: Path) -> None:
        with staged.open("wb") as stream:
            np.save(stream, array)

    files.write_atomic(path, write)


def decode_split(split: Split, image_size: int) -> np.ndarray:
    """Decode and resize every image of ``split`` (progress bar); errors name the file."""
    pixels = np.empty((len(split), image_size, image_size, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(split.files, desc=f"decode {split.name}@{image_size}")):
        pixels[i] = decode_file(path, image_size)
    return pixels


def decode_file(path: Path, image_size: int) -> np.ndarray:
    """One image file to uint8 pixels, via the serving preprocessing contract."""
    try:
        return preprocessing.load_pixels(path.read_bytes(), image_size)
    except preprocessing.ImageError as exc:
        raise DatasetError(f"Expected a readable image at {path}. {exc} ({exc.code})") from exc


_MEMORY: dict[tuple[str, str, int], np.ndarray] = {}


def _class_folders(folder: Path) -> tuple[str, ...]:
    if not folder.is_dir():
        raise DatasetError(
            f"Expected split folder {folder} (with one folder per class). It does not exist."
        )
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and _is_data_file(p)))
    if len(classes) < 2:
        raise DatasetError(
            f"Expected at least two class folders in {folder}. Received: {list(classes)}"
        )
    return classes


def _is_data_file(path: Path) -> bool:
    """Hidden entries (``.DS_Store``, ``.git``) are not data."""
    return not path.name.startswith(".")


def _fingerprint(root: Path, splits: dict[str, Split]) -> str:
    digest = hashlib.sha256()
    for split in splits.values():
        for path in split.files:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(bytes.fromhex(files.sha256_file(path)))
    return digest.hexdigest()
