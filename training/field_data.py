"""Extra labelled photos from the field (``python -m training field-export``) in a dataset.

The export's layout is ``DIR/<category>/<file>`` plus ``DIR/groups.csv`` (``file``,
``product_id``). :func:`extend` appends its photos to a split (the categories must be the
dataset's own) with their product ids, which :func:`training.folds.stratified_folds` keeps
in one fold; photos of the original dataset have no product id (each is its own group).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lambda_function import files

if TYPE_CHECKING:
    from training.data import Split

GROUPS_FILE = "groups.csv"


def extend(split: Split, labels: tuple[str, ...], folder: Path) -> tuple[Split, str]:
    """``split`` with ``folder``'s photos appended, and a digest of what was added."""
    from training.data import DatasetError, Split

    if not folder.is_dir():
        raise DatasetError(f"Expected an extra-data folder (field-export). Missing: {folder}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = sorted(set(classes) - set(labels))
    if unknown:
        raise DatasetError(
            f"Expected the extra data's class folders among the dataset's {list(labels)}. "
            f"Received: {unknown} in {folder}"
        )
    products = read_groups(folder)
    paths: list[Path] = []
    targets: list[int] = []
    groups: list[str] = []
    digest = hashlib.sha256()
    for label in classes:
        for path in sorted(p for p in (folder / label).iterdir() if not p.name.startswith(".")):
            relative = f"{label}/{path.name}"
            paths.append(path)
            targets.append(labels.index(label))
            groups.append(products.get(relative, ""))
            digest.update(relative.encode() + bytes.fromhex(files.sha256_file(path)))
    base_groups = split.groups or ("",) * len(split)
    extended = Split(
        split.name,
        split.files + tuple(paths),
        np.concatenate([split.targets, np.array(targets, dtype=np.int32)]),
        tuple(base_groups) + tuple(groups),
    )
    return extended, digest.hexdigest()


def read_groups(folder: Path) -> dict[str, str]:
    """``groups.csv``: relative file path -> product id (empty when the file is absent)."""
    path = folder / GROUPS_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as stream:
        return {row["file"]: row["product_id"] for row in csv.DictReader(stream) if row["file"]}


def dataset_groups(splits: dict[str, Split]) -> np.ndarray:
    """A group id per photo of every split, in order: its product id, or a unique one."""
    ids = []
    for split in splits.values():
        for index, group in enumerate(split.groups or ("",) * len(split)):
            ids.append(f"product:{group}" if group else f"photo:{split.name}:{index}")
    return np.array(ids, dtype=object)
