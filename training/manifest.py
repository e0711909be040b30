"""``manifest.json``: the record of every run and which one to ship (``best_run``).

Paths inside are relative to the manifest's folder, so the folder can move.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from lambda_function import files
from training.config import RunConfig
from training.methods import Method

NAME = "manifest.json"


def entry(
    name: str,
    root: Path,
    checkpoint: Path,
    method: Method,
    image_size: int,
    labels: Sequence[str],
    fingerprint: dict,
    *,
    best_epoch: int,
    best_val_accuracy: float,
    seconds: float,
    path: str,
    **extra: Any,
) -> dict:
    """The manifest record of one saved network (``train`` and ``cv --ship`` write it)."""
    return {
        "name": name,
        "config": {**method.to_dict(), "image_size": image_size, "name": name, "path": path},
        "labels": list(labels),
        "best_checkpoint": checkpoint.relative_to(root).as_posix(),
        "best_epoch": best_epoch,
        "best_val_accuracy": best_val_accuracy,
        **extra,
        "fingerprint": fingerprint,
        "train_seconds": round(seconds, 2),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "checkpoint_sha256": files.sha256_file(checkpoint),
    }


@dataclass(frozen=True)
class RunRecord:
    """A PyTorch run's facts (``torch_training``; the Keras path writes :func:`entry`)."""

    config: RunConfig
    checkpoint: Path
    best_epoch: int  # 1-based, as in the file name
    best_val_accuracy: float
    history: dict[str, list[float]]
    seconds: float
    trainable_params: int

    @property
    def name(self) -> str:
        return self.config.run_name


def run_entry(result: RunRecord, root: Path, labels: Sequence[str], fingerprint: dict) -> dict:
    """The manifest record of one PyTorch run."""
    return {
        "name": result.name,
        "config": result.config.to_dict(),
        "labels": list(labels),
        "best_checkpoint": result.checkpoint.relative_to(root).as_posix(),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "history": result.history,
        "fingerprint": fingerprint,
        "train_seconds": round(result.seconds, 2),
        "trainable_params": result.trainable_params,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
    }


def load(root: Path) -> dict:
    path = root / NAME
    return json.loads(path.read_text()) if path.is_file() else {"runs": []}


def save(root: Path, manifest: dict) -> Path:
    """Write atomically (a reader never sees half a file)."""
    return files.write_text_atomic(root / NAME, json.dumps(manifest, indent=2))


def record(
    root: Path, entries: list[dict], best_run: str, *, selection_rule: str | None = None
) -> Path:
    """Add (or replace, by name) ``entries`` and name ``best_run`` as the one to ship."""
    manifest = load(root)
    names = {entry["name"] for entry in entries}
    manifest["runs"] = [r for r in manifest.get("runs", []) if r["name"] not in names] + entries
    manifest["best_run"] = best_run
    if selection_rule is not None:
        manifest["selection_rule"] = selection_rule
    return save(root, manifest)


def set_test(root: Path, run_name: str, metrics: dict) -> Path:
    """Store test metrics on a run."""
    manifest = load(root)
    for run in manifest["runs"]:
        if run["name"] == run_name:
            run["test"] = metrics
            return save(root, manifest)
    raise KeyError(f"Expected run {run_name!r} in {root / NAME}. Found: {_names(manifest)}")


def best(root: Path) -> dict:
    """The ``best_run`` entry of the manifest in ``root``."""
    manifest = load(root)
    for run in manifest.get("runs", []):
        if run["name"] == manifest.get("best_run"):
            return run
    raise FileNotFoundError(
        f"Expected a manifest with a best_run at {root / NAME} (written by `python -m training "
        f"train`). Found runs: {_names(manifest)}"
    )


def versions() -> dict[str, str]:
    """Python's, TensorFlow's and Keras' versions (read from package metadata, not imports)."""
    return {
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow", "tensorflow-cpu"),
        "keras": _version("keras"),
    }


def _version(*distributions: str) -> str:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def _names(manifest: dict) -> list[str]:
    return [r["name"] for r in manifest.get("runs", [])]
