"""``manifest.json`` of PyTorch runs: the Keras runs' shape (``training/manifest.py``).

Each run records name, config, labels, best_checkpoint (relative to the manifest's
folder), best_epoch, best_val_accuracy, history, fingerprint, train_seconds,
trainable_params, created_at and versions; ``best_run`` names the one to ship and
``framework`` says which trainer wrote it.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from torch_training.train import RunResult

NAME = "manifest.json"
FRAMEWORK = "pytorch"


def run_entry(result: RunResult, root: Path, labels: Sequence[str], fingerprint: dict) -> dict:
    """The manifest record of one run."""
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


def record(root: Path, entries: list[dict], best_run: str) -> Path:
    """Add (or replace, by name) ``entries`` and name ``best_run`` as the one to ship."""
    manifest = load(root)
    names = {entry["name"] for entry in entries}
    manifest["runs"] = [r for r in manifest.get("runs", []) if r["name"] not in names] + entries
    manifest["best_run"] = best_run
    manifest["framework"] = FRAMEWORK
    return _save(root, manifest)


def set_test(root: Path, run_name: str, metrics: dict) -> Path:
    """Store test metrics on a run."""
    manifest = load(root)
    for run in manifest["runs"]:
        if run["name"] == run_name:
            run["test"] = metrics
            return _save(root, manifest)
    raise KeyError(f"Expected run {run_name!r} in {root / NAME}. Found: {_names(manifest)}")


def find(root: Path, name: str | None = None) -> dict:
    """The run called ``name``, or the ``best_run`` of the manifest in ``root``."""
    manifest = load(root)
    wanted = name or manifest.get("best_run")
    for run in manifest.get("runs", []):
        if run["name"] == wanted:
            return run
    raise FileNotFoundError(
        f"Expected a run {wanted!r} in {root / NAME} (written by `python -m torch_training "
        f"train`). Found runs: {_names(manifest)}"
    )


def versions() -> dict[str, str]:
    """Python's and the training libraries' versions (from package metadata)."""
    found = {"python": platform.python_version()}
    for name in ("torch", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _save(root: Path, manifest: dict) -> Path:
    """Write atomically (a reader never sees half a file)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
    return path


def _names(manifest: dict) -> list[str]:
    return [r["name"] for r in manifest.get("runs", [])]
