"""What each ``python -m training`` command does, given parsed :class:`~training.config.Options`."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from training import data, manifest, plots
from training.config import RULE, Options
from training.evaluate import evaluate_checkpoint
from training.finetune import fine_tune_run
from training.runs import RunResult
from training.train import train_run
from training.tune import sweep, write_table
from training.workspace import Workspace


def run(options: Options) -> int:
    """Dispatch to the command; returns the exit code."""
    ws = workspace(options)
    command = {"train": train, "tune": tune, "evaluate": evaluate}[options.command]
    return command(ws, options)


def workspace(options: Options) -> Workspace:
    """Dataset checked, device strategy chosen (GPUs when TensorFlow sees them)."""
    dataset = data.scan(options.data_dir)
    gpus = tf.config.list_physical_devices("GPU")
    if options.mixed_precision:
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    print(
        f"dataset {dataset.root}: {', '.join(f'{s} {len(dataset[s])}' for s in data.SPLITS)} "
        f"images, {len(dataset.labels)} classes; devices: {len(gpus)} GPU(s)"
        + (", mixed precision" if options.mixed_precision else ""),
        flush=True,
    )
    return Workspace(
        dataset=dataset,
        weights=options.weights,
        output_dir=options.output_dir,
        cache_dir=options.cache_dir,
        strategy=strategy,
        verbose=options.verbose,
    )


def train(ws: Workspace, options: Options) -> int:
    start = time.perf_counter()
    cfg = options.run
    head = train_run(ws, replace(cfg, fine_tune_from=""))
    _say(head)
    results = [head]
    if cfg.fine_tune_from:
        results.append(fine_tune_run(ws, cfg, head))
        _say(results[-1])
    # The one to ship: the best by validation accuracy; fine-tuning wins a tie.
    best = max(reversed(results), key=lambda r: r.best_val_accuracy)
    record_runs(ws, results, best.name)
    print(f"best_run: {best.name}", flush=True)
    if options.evaluate:
        for result in results:
            metrics = evaluate_run(ws, result.name, result)
            print(f"{result.name}: test accuracy {metrics['accuracy']:.4f}", flush=True)
    print(f"manifest: {ws.output_dir / manifest.NAME} ({time.perf_counter() - start:.0f} s)")
    return 0


def _say(result: RunResult) -> None:
    print(
        f"{result.name}: best epoch {result.best_epoch}, val_accuracy "
        f"{result.best_val_accuracy:.4f} -> {result.checkpoint} ({result.seconds:.0f} s)",
        flush=True,
    )


def tune(ws: Workspace, options: Options) -> int:
    rows, best = sweep(ws, options.run, options.sweep)
    unique = list({row.result.name: row.result for row in rows}.values())
    record_runs(ws, unique, best.name, selection_rule=RULE)
    paths = write_table(rows, best, ws.output_dir)
    print(paths["md"].read_text())
    print(f"best: {best.name} (val_accuracy {best.best_val_accuracy:.4f}); table: {paths['md']}")
    return 0


def evaluate(ws: Workspace, options: Options) -> int:
    record = _find_run(ws.output_dir, options.run_name)
    metrics = evaluate_run(ws, record["name"], None, split=options.split)
    print(f"{options.split} accuracy {metrics['accuracy']:.4f} ({metrics['n_images']} images)")
    return 0


def record_runs(
    ws: Workspace, results: list[RunResult], best_run: str, *, selection_rule: str | None = None
) -> None:
    """Learning curves next to each checkpoint, and the runs in the manifest."""
    for result in results:
        plots.learning_curves(
            {result.name: result.history},
            result.checkpoint.parent / "learning_curve.png",
            f"{result.name}: train (dashed) vs validation (solid)",
        )
    entries = [manifest.run_entry(r, ws.output_dir, ws.labels, ws.fingerprint()) for r in results]
    manifest.record(ws.output_dir, entries, best_run, selection_rule=selection_rule)


def evaluate_run(
    ws: Workspace, run_name: str, result: RunResult | None, split: str = "test"
) -> dict:
    """Score the run's checkpoint file on ``split`` and store the numbers in the manifest."""
    record = _find_run(ws.output_dir, run_name)
    size = record["config"]["image_size"]
    checkpoint = ws.output_dir / record["best_checkpoint"]
    plot = checkpoint.parent / f"confusion_{split}.png"
    metrics, logits = evaluate_checkpoint(ws, checkpoint, size, split, plot)
    if result is not None and result.fast_predict is not None:
        # What training measured (on cached features/activations) vs the saved .h5.
        fast = np.asarray(result.fast_predict(split))
        metrics["fast_path_agreement"] = {
            "max_abs_logit_diff": float(np.abs(fast - logits).max()),
            "same_prediction": float((fast.argmax(1) == logits.argmax(1)).mean()),
        }
    if split == "test":
        manifest.set_test(ws.output_dir, run_name, metrics)
    return metrics


def _find_run(root: Path, name: str | None) -> dict:
    if name is None:
        return manifest.best(root)
    for record in manifest.load(root).get("runs", []):
        if record["name"] == name:
            return record
    raise FileNotFoundError(f"Expected a run named {name!r} in {root / manifest.NAME}")
