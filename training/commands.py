"""``python -m training train`` and ``evaluate``, on the one engine (:mod:`training.engine`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from training import config, data, engine, features, manifest
from training.evaluate import evaluate_checkpoint
from training.methods import METHODS, TUNABLE, override


def run(args: argparse.Namespace) -> int:
    """Dispatch to the command; returns the exit code."""
    return {"train": train, "evaluate": evaluate}[args.command](args)


def train(args: argparse.Namespace) -> int:
    """Fit the method on train, keep the best validation epoch, save, record, score on test."""
    given = {name: getattr(args, name) for name in TUNABLE if getattr(args, name) is not None}
    method = override(METHODS[args.method], **given)
    dataset = data.scan(args.data_dir)
    weights = config.weights(args.weights)
    by_input, targets = engine.inputs([method], dataset, args.image_size, weights, args.cache_dir)
    rows = split_rows(dataset)
    start = time.perf_counter()
    fitted = engine.fit(
        method,
        by_input,
        targets,
        rows["train"],
        rows["test"],
        len(dataset.labels),
        args.seed,
        engine.fresh_base(args.image_size, weights),
        rows["validation"],
        keep_best=True,
    )
    seconds = time.perf_counter() - start
    val = fitted.run.inner_accuracy
    assert val is not None  # the validation split is the inner holdout
    epoch = int(np.argmax(val)) + 1  # the first of equals, as the saved weights are
    name = args.name or f"{method.name}_s{args.image_size}"
    checkpoint = engine.save(fitted, dataset, args.output_dir / "runs" / name, epoch, val.max())
    entry = manifest.entry(
        name,
        args.output_dir,
        checkpoint,
        method,
        args.image_size,
        dataset.labels,
        {"data": dataset.fingerprint, "weights": features.weights_fingerprint(weights)},
        best_epoch=epoch,
        best_val_accuracy=float(val.max()),
        seconds=seconds,
        path=engine.path(method),
        history={"val_accuracy": [float(a) for a in val]},
        trained_on="the train split; epoch chosen on the validation split",
    )
    manifest.record(args.output_dir, [entry], name)
    print(
        f"{name}: best epoch {epoch}, val_accuracy {val.max():.4f} -> {checkpoint} "
        f"({seconds:.0f} s)",
        flush=True,
    )
    if not args.no_evaluate:
        metrics = evaluate_run(args, name, fast=fitted.run.logits[epoch - 1])
        print(f"{name}: test accuracy {metrics['accuracy']:.4f}", flush=True)
    print(f"manifest: {args.output_dir / manifest.NAME}")
    return 0


def split_rows(dataset: data.Dataset) -> dict[str, np.ndarray]:
    """Each split's rows among every labelled photo (the splits in order, as cached)."""
    rows, start = {}, 0
    for split in dataset.splits:
        rows[split] = np.arange(start, start + len(dataset[split]))
        start += len(dataset[split])
    return rows


def evaluate(args: argparse.Namespace) -> int:
    record = _find_run(args.output_dir, args.run)
    metrics = evaluate_run(args, record["name"], split=args.split)
    print(f"{args.split} accuracy {metrics['accuracy']:.4f} ({metrics['n_images']} images)")
    return 0


def evaluate_run(
    args: argparse.Namespace, run_name: str, split: str = "test", fast: np.ndarray | None = None
) -> dict:
    """Score the run's saved ``.h5`` on ``split``; on test, store the numbers in the manifest.

    ``fast``: what training measured on the cached inputs, compared with the saved file.
    """
    record = _find_run(args.output_dir, run_name)
    checkpoint = args.output_dir / record["best_checkpoint"]
    plot = checkpoint.parent / f"confusion_{split}.png"
    dataset = data.scan(args.data_dir)
    metrics, logits = evaluate_checkpoint(checkpoint, dataset, split, plot)
    if fast is not None:
        metrics["fast_path_agreement"] = {
            "max_abs_logit_diff": float(np.abs(fast - logits).max()),
            "same_prediction": float((fast.argmax(1) == logits.argmax(1)).mean()),
        }
    if split == "test":
        manifest.set_test(args.output_dir, run_name, metrics)
    return metrics


def _find_run(root: Path, name: str | None) -> dict:
    if name is None:
        return manifest.best(root)
    for record in manifest.load(root).get("runs", []):
        if record["name"] == name:
            return record
    raise FileNotFoundError(f"Expected a run named {name!r} in {root / manifest.NAME}")
