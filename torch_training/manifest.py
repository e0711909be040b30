"""``manifest.json`` of PyTorch runs: the Keras runs' own format (``training.manifest``).

The file handling and the run record are shared with the Keras path, so the two
cannot drift; a PyTorch manifest adds ``"framework": "pytorch"`` and its runs name the
PyTorch versions instead of TensorFlow's.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from torch_training.train import RunResult
from training import manifest as shared

NAME = shared.NAME
FRAMEWORK = "pytorch"
set_test = shared.set_test


def run_entry(
    result: RunResult,
    root: Path,
    labels: Sequence[str],
    fingerprint: dict,
    calibration: dict | None = None,
) -> dict:
    """The manifest record of one run (``training.manifest.run_entry``'s shape), with the
    ``calibration`` that ``convert`` writes into the model (as ``training cv --ship`` does)."""
    record = shared.RunRecord(
        config=result.config,
        checkpoint=result.checkpoint,
        best_epoch=result.best_epoch,
        best_val_accuracy=result.best_val_accuracy,
        history=result.history,
        seconds=result.seconds,
        trainable_params=result.trainable_params,
    )
    entry = {**shared.run_entry(record, root, labels, fingerprint), "versions": versions()}
    return {**entry, "calibration": calibration} if calibration is not None else entry


def record(root: Path, entries: list[dict], best_run: str) -> Path:
    """Add (or replace, by name) ``entries``, name ``best_run`` and mark the framework."""
    shared.record(root, entries, best_run)
    manifest = shared.load(root)
    manifest["framework"] = FRAMEWORK
    return shared.save(root, manifest)


def versions() -> dict[str, str]:
    """Python's and the training libraries' versions (from package metadata)."""
    found = {"python": platform.python_version()}
    for name in ("torch", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
