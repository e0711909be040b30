"""Which Keras checkpoint to convert, and what it promises: labels, size, accuracy.

The source is either a training output folder (its ``manifest.json`` names the runs and
their best checkpoints) or an ``.h5`` file. A bare ``.h5`` with no manifest beside it
carries no labels, so the caller must supply them; its image size is read from the
model's input shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert.errors import ConvertError
from lambda_function.files import sha256_file

MANIFEST = "manifest.json"
MODEL_SUFFIXES = (".h5", ".keras")


@dataclass(frozen=True)
class Checkpoint:
    """A Keras model file and the contract it is converted under."""

    path: Path
    labels: tuple[str, ...]
    image_size: int | None  # None: take it from the model's input shape
    val_accuracy: float | None
    sha256: str
    run: str | None = None  # the manifest's run name; None for a bare file
    manifest: Path | None = None
    # Calibration fitted by `python -m training cv` (the run's "calibration"); none: 1.0, None.
    temperature: float = 1.0
    confidence_threshold: float | None = None
    # The catalogue's Gaussians (training.catalogue) and the distance cut, if the run has them.
    catalogue: Path | None = None
    catalogue_cut: float | None = None

    def loaded(self, image_size: int) -> LoadedCheckpoint:
        """This checkpoint once its model is loaded and its input size known."""
        return LoadedCheckpoint(
            path=self.path,
            labels=self.labels,
            image_size=image_size,
            val_accuracy=self.val_accuracy,
            sha256=self.sha256,
            run=self.run,
            manifest=self.manifest,
            temperature=self.temperature,
            confidence_threshold=self.confidence_threshold,
            catalogue=self.catalogue,
            catalogue_cut=self.catalogue_cut,
        )


@dataclass(frozen=True)
class LoadedCheckpoint(Checkpoint):
    """A checkpoint whose model has been loaded and checked: its image size is known."""

    image_size: int


def find_checkpoint(
    source: Path, *, labels: Sequence[str] | None = None, run: str | None = None
) -> Checkpoint:
    """Resolve ``source`` (a training folder, its manifest, or a model file)."""
    if not source.exists():
        raise ConvertError(
            f"{source}: no such file or folder. Expected a Keras model file "
            f"({', '.join(MODEL_SUFFIXES)}) or a training output folder with {MANIFEST}"
        )
    if source.is_dir():
        manifest = source / MANIFEST
        if not manifest.is_file():
            raise ConvertError(
                f"{source}: a folder without {MANIFEST}. Expected a training output folder "
                f"(`python -m training` writes {MANIFEST} there) or a Keras model file"
            )
        return _from_manifest(manifest, labels=labels, run=run)
    if source.suffix == ".json":
        return _from_manifest(source, labels=labels, run=run)
    return _from_model_file(source, labels=labels)


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse a training manifest; it must hold a non-empty ``runs`` list."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvertError(f"{path}: not a readable JSON training manifest ({exc})") from exc
    runs = manifest.get("runs") if isinstance(manifest, dict) else None
    if not isinstance(runs, list) or not runs:
        raise ConvertError(f"{path}: expected a training manifest with a non-empty 'runs' list")
    return manifest


def select_run(manifest: dict[str, Any], path: Path, run: str | None = None) -> dict[str, Any]:
    """The run to ship: ``run`` if named, else the manifest's ``best_run``, else the run
    with the highest ``best_val_accuracy``."""
    runs = [r for r in manifest["runs"] if isinstance(r, dict)]
    name = run or manifest.get("best_run")
    if name:
        chosen = [r for r in runs if r.get("name") == name]
        if not chosen:
            names = ", ".join(str(r.get("name")) for r in runs)
            raise ConvertError(f"{path}: no run named {name!r}. Runs: {names}")
        return chosen[0]
    scored = [r for r in runs if isinstance(r.get("best_val_accuracy"), int | float)]
    if not scored:
        raise ConvertError(f"{path}: expected runs with a numeric 'best_val_accuracy'")
    return max(scored, key=lambda r: r["best_val_accuracy"])


def _from_manifest(
    manifest_path: Path, *, labels: Sequence[str] | None, run: str | None
) -> Checkpoint:
    manifest = read_manifest(manifest_path)
    chosen = select_run(manifest, manifest_path, run)
    return _checkpoint_of_run(chosen, manifest_path, labels)


def _checkpoint_of_run(
    run: dict[str, Any], manifest_path: Path, labels: Sequence[str] | None
) -> Checkpoint:
    name = run.get("name")
    where = f"{manifest_path} (run {name!r})"
    relative = run.get("best_checkpoint")
    run_labels = run.get("labels")
    size = (run.get("config") or {}).get("image_size")
    accuracy = run.get("best_val_accuracy")
    if not isinstance(relative, str) or not relative:
        raise ConvertError(f"{where}: expected 'best_checkpoint', the path of the best .h5")
    if not isinstance(run_labels, list) or not all(isinstance(x, str) for x in run_labels):
        raise ConvertError(f"{where}: expected 'labels', the ordered list of class names")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ConvertError(f"{where}: expected an integer 'config.image_size'. Got {size!r}")
    if labels is not None and tuple(labels) != tuple(run_labels):
        raise ConvertError(
            f"{where}: --labels {list(labels)} disagree with the manifest's {run_labels}"
        )
    path = manifest_path.parent / relative
    if not path.is_file():
        raise ConvertError(f"{where}: its best checkpoint {path} does not exist")
    return Checkpoint(
        path=path,
        labels=tuple(run_labels),
        image_size=size,
        val_accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        sha256=sha256_file(path),
        run=str(name) if name is not None else None,
        manifest=manifest_path,
        **_calibration(run.get("calibration"), where, manifest_path.parent),
    )


def _calibration(record: Any, where: str, folder: Path) -> dict[str, Any]:
    """The run's ``calibration`` (temperature, confidence threshold, catalogue), checked;
    {} if none."""
    if record is None:
        return {}
    temperature = record.get("temperature", 1.0) if isinstance(record, dict) else None
    threshold = record.get("confidence_threshold") if isinstance(record, dict) else None
    if (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or (threshold is not None and not _number(threshold))
    ):
        raise ConvertError(
            f"{where}: expected 'calibration' as {{'temperature': number, "
            f"'confidence_threshold': number or null}}. Received: {record!r}"
        )
    return {
        "temperature": float(temperature),
        "confidence_threshold": None if threshold is None else float(threshold),
        **_catalogue(record.get("catalogue"), where, folder),
    }


def _catalogue(record: Any, where: str, folder: Path) -> dict[str, Any]:
    """The calibration's ``catalogue`` (``file`` beside the manifest, ``cut``); {} if none."""
    if record is None:
        return {}
    name = record.get("file") if isinstance(record, dict) else None
    cut: Any = record.get("cut") if isinstance(record, dict) else None
    if not isinstance(name, str) or not _number(cut) or not 0 < cut < float("inf"):
        raise ConvertError(
            f"{where}: expected 'catalogue' as {{'file': name, 'cut': number > 0}}. "
            f"Received: {record!r}"
        )
    path = folder / name
    if not path.is_file():
        raise ConvertError(f"{where}: its catalogue {path} does not exist")
    return {"catalogue": path, "catalogue_cut": float(cut)}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _from_model_file(path: Path, *, labels: Sequence[str] | None) -> Checkpoint:
    described = _described_by_manifest(path)
    if described is not None:
        return _checkpoint_of_run(*described, labels)
    if labels is None:
        raise ConvertError(
            f"{path}: no {MANIFEST} beside it names this checkpoint, so its class names are "
            "unknown. Pass --labels (in the model's output order), or convert the training "
            "output folder instead"
        )
    return Checkpoint(
        path=path,
        labels=tuple(labels),
        image_size=None,
        val_accuracy=None,
        sha256=sha256_file(path),
    )


def _described_by_manifest(path: Path) -> tuple[dict[str, Any], Path] | None:
    """The manifest run whose best checkpoint is ``path`` (searched in its folder and the
    two above it), if any."""
    target = path.resolve()
    for folder in list(target.parents)[:3]:
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            continue
        manifest = read_manifest(manifest_path)
        for run in manifest["runs"]:
            relative = run.get("best_checkpoint") if isinstance(run, dict) else None
            if isinstance(relative, str) and (folder / relative).resolve() == target:
                return run, manifest_path
    return None
