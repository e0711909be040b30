"""What each ``python -m torch_training`` command does, given parsed options."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from torch_training import manifest
from torch_training.calibrate import fit as fit_calibration
from torch_training.device import pick_device, set_threads
from torch_training.train import (
    RunResult,
    Workspace,
    fine_tune_run,
    load_checkpoint,
    predict_cached,
    train_run,
)
from training import data
from training.config import RunConfig

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Options:
    """Where the data, weights and outputs are, and how to run."""

    data_dir: Path
    weights: Path
    output_dir: Path = Path("artifacts/torch/training")
    cache_dir: Path | None = Path("artifacts/cache")
    device: str = "auto"
    threads: int | None = None
    engine: str = "torch"
    run: RunConfig = field(default_factory=RunConfig)


def workspace(options: Options) -> Workspace:
    set_threads(options.threads)
    device = pick_device(options.device)
    dataset = data.scan(options.data_dir)
    counts = ", ".join(f"{s} {len(dataset[s])}" for s in SPLITS)
    print(f"dataset {options.data_dir}: {counts} images; device: {device}", flush=True)
    return Workspace(
        dataset, Path(options.weights), options.output_dir, options.cache_dir, device,
        engine=options.engine,
    )  # fmt: skip


def train(options: Options) -> int:
    """Train the head (and fine-tune if asked), record the runs, score the test split."""
    start = time.perf_counter()
    ws = workspace(options)
    cfg = options.run
    results = [train_run(ws, replace(cfg, fine_tune_from=""))]
    if cfg.fine_tune_from:
        results.append(fine_tune_run(ws, cfg, results[0]))
    best = max(reversed(results), key=lambda r: r.best_val_accuracy)  # fine-tuning wins a tie
    entries = [
        manifest.run_entry(r, ws.output_dir, ws.labels, ws.fingerprint(), calibrate(ws, r))
        for r in results
    ]
    manifest.record(ws.output_dir, entries, best.name)
    for result in results:
        _say(result)
        metrics = evaluate(ws, result)
        manifest.set_test(ws.output_dir, result.name, metrics)
        print(f"{result.name}: test accuracy {metrics['accuracy']:.4f}", flush=True)
    print(f"best_run: {best.name}", flush=True)
    print(f"manifest: {ws.output_dir / manifest.NAME} ({time.perf_counter() - start:.0f} s)")
    return 0


def calibrate(ws: Workspace, result: RunResult, split: str = "validation") -> dict:
    """Temperature and ``confident`` threshold fitted on ``split``'s logits of the run."""
    logits = predict_cached(ws, result.model, result.config, split)
    return fit_calibration(logits, ws.targets(split), split)


def evaluate(ws: Workspace, result: RunResult, split: str = "test") -> dict:
    """Reload the run's checkpoint from disk and score it on ``split``."""
    model, _ = load_checkpoint(result.checkpoint)
    logits = predict_cached(ws, model.to(ws.device), result.config, split)
    targets = ws.targets(split)
    predicted = logits.argmax(axis=1)
    n = len(ws.labels)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (targets, predicted), 1)
    return {
        "split": split,
        "accuracy": float((predicted == targets).mean()),
        "n_images": len(targets),
        "confusion_matrix": matrix.tolist(),
    }


def features(options: Options, splits: tuple[str, ...], kind: str = "pooled") -> int:
    """Compute and cache a split's features (resumable: run it again to continue)."""
    ws = workspace(options)
    for split in splits:
        get = ws.features if kind == "pooled" else ws.activations
        array = get(split, options.run.image_size)
        print(f"{kind} {split}@{options.run.image_size}: {array.shape} cached", flush=True)
    return 0


def export(options: Options, run: str | None, output: Path, **kwargs: Any) -> int:
    """The run's checkpoint through ``convert``'s pipeline: verified ONNX (+ int8 if asked),
    ``serve.onnx`` and ``report.json`` beside ``output``.

    ``kwargs`` are :class:`convert.pipeline.Options` fields (``limit``, ``int8``, ...).
    """
    from convert import pipeline
    from torch_training.export import torch_source

    set_threads(options.threads)
    convert_options = pipeline.Options(
        source=options.output_dir, output=output, run=run, data_dir=options.data_dir, **kwargs
    )
    report = pipeline.run(convert_options, torch_source)
    parity = report.verification.parity if report.verification else None
    served = report.served
    print(
        f"{output}: {report.sizes_bytes['onnx'] / 1e6:.1f} MB, max |Δ logits| vs PyTorch "
        f"{parity.max_abs_diff if parity else float('nan'):.2g} on "
        f"{parity.n_images if parity else 0} photos; serving "
        f"{served.variant if served else '-'} as {convert_options.serve_path}",
        flush=True,
    )
    return 0


def _say(result: RunResult) -> None:
    print(
        f"{result.name}: best epoch {result.best_epoch}, val_accuracy "
        f"{result.best_val_accuracy:.4f}, {result.seconds:.1f} s -> {result.checkpoint}",
        flush=True,
    )


def default_data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR", "data/clothing-dataset-small"))
