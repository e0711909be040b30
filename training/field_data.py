"""Product ids of the extra labelled photos from the field (``python -m training field-export``).

The export's layout is ``DIR/<category>/<file>`` plus ``DIR/groups.csv`` (``file``,
``product_id``); :func:`training.data.scan` (``extra=DIR``) appends its photos to the first
split with their product ids, and :func:`dataset_groups` turns those into the group per
photo that :func:`training.folds.stratified_folds` keeps in one fold. Photos of the original
dataset have no product id (each is its own group).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

GROUPS_FILE = "groups.csv"


class _Split(Protocol):
    """What :func:`dataset_groups` reads of a :class:`training.data.Split`."""

    @property
    def name(self) -> str: ...

    @property
    def groups(self) -> tuple[str, ...]: ...

    def __len__(self) -> int: ...


def read_groups(folder: Path) -> dict[str, str]:
    """``groups.csv``: relative file path -> product id (empty when the file is absent)."""
    path = folder / GROUPS_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as stream:
        return {row["file"]: row["product_id"] for row in csv.DictReader(stream) if row["file"]}


def write_groups(folder: Path, rows: Iterable[tuple[str, str]]) -> None:
    """``groups.csv`` for ``(relative file path, product id)`` rows."""
    with (folder / GROUPS_FILE).open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["file", "product_id"])
        writer.writerows(rows)


def dataset_groups(splits: Mapping[str, _Split]) -> np.ndarray:
    """A group id per photo of every split, in order: its product id, or a unique one."""
    ids = []
    for split in splits.values():
        for index, group in enumerate(split.groups or ("",) * len(split)):
            ids.append(f"product:{group}" if group else f"photo:{split.name}:{index}")
    return np.array(ids, dtype=object)
