"""What each ``python -m torch_training`` command does, given parsed options."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from torch_training import manifest
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
    entries = [manifest.run_entry(r, ws.output_dir, ws.labels, ws.fingerprint()) for r in results]
    manifest.record(ws.output_dir, entries, best.name)
    for result in results:
        _say(result)
        metrics = evaluate(ws, result)
        manifest.set_test(ws.output_dir, result.name, metrics)
        print(f"{result.name}: test accuracy {metrics['accuracy']:.4f}", flush=True)
    print(f"best_run: {best.name}", flush=True)
    print(f"manifest: {ws.output_dir / manifest.NAME} ({time.perf_counter() - start:.0f} s)")
    return 0


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


def export(options: Options, run: str | None, output: Path, **kwargs) -> int:
    """The run's checkpoint to a verified ONNX model (+ int8 if asked) and ``serve.onnx``."""
    from torch_training.export import export as export_model

    set_threads(options.threads)
    record = manifest.find(options.output_dir, run)
    checkpoint = options.output_dir / record["best_checkpoint"]
    model, saved = load_checkpoint(checkpoint)
    report = export_model(model, saved, checkpoint, output, options.data_dir, **kwargs)
    verification = report["verification"]
    print(
        f"{output}: {report['size_bytes'] / 1e6:.1f} MB, max |Δ logits| vs PyTorch "
        f"{verification['parity']['max_abs_diff']:.2g} on {verification['parity']['n_images']} "
        f"photos; serving {report['serve']['from']} as {report['serve']['path']}",
        flush=True,
    )
    if "int8" in report:
        int8 = report["int8"]
        print(
            f"int8: accuracy {int8['accuracy']} vs fp32 {int8['accuracy_fp32']}; "
            f"{'accepted' if int8['accepted'] else 'rejected'}",
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
