"""int8 against fp32 out of fold for a fine-tuning method: every fold's network, converted.

Fine-tuning changes the top blocks' weights, so no one int8 base stands for every fold
(as it does for a head-only method, :mod:`bench.cv_int8`). Per fold, the method is
trained again exactly as cross-validation trained it (same rows, same seed, stopped at
the fold's chosen epoch, so with weight averaging it holds the mean of the same epochs),
then converted to ONNX fp32 and quantised to int8 as ``python -m convert --int8`` does
(static QDQ, 200 photos of the fold's *training* rows for the ranges). Both ONNX models
score the fold's held-out photos through the serving preprocessing.

The retrained network must reproduce the CV report's out-of-fold logits: the agreement
is reported, so the fp32 column is the CV table's figure, not a new one.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from bench.results import SCRATCH


@dataclass
class FoldScores:
    """The held-out photos' logits per model, and what the fold cost."""

    keras: np.ndarray
    fp32: np.ndarray
    int8: np.ndarray
    train_s: float
    convert_s: float
    score_s: float


def paired_logits(
    method, report: dict, cv_dir: Path, data_dir: Path, cache_dir: Path, weights: str | None
) -> dict:
    """Every photo's out-of-fold logits from Keras, ONNX fp32 and ONNX int8; and timings."""
    from training import data, engine
    from training.folds import fold_indices
    from training.model import make_base

    row = next(r for r in report["methods"] if r["method"] == method.name)
    size, seed = report["image_size"], report["seed"]
    dataset = data.scan(data_dir)
    files = [f for split in dataset.splits for f in dataset[split].files]
    by_view, targets = engine.inputs([method], dataset, size, weights, cache_dir)
    fold = np.load(cv_dir / "folds.npy")
    n = len(dataset.labels)
    out = {kind: np.empty((len(targets), n)) for kind in ("keras", "fp32", "int8")}
    folds = []
    for i, train_rows, held_out in fold_indices(fold):
        epochs = row["fold_epochs"][i]
        scores = one_fold(
            replace(method, fine_tune_epochs=epochs),
            by_view,
            (targets, train_rows, held_out, n),
            [files[r] for r in held_out],
            [files[r] for r in train_rows],
            seed + i,
            partial(make_base, size, weights),
            size,
        )
        for kind in out:
            out[kind][held_out] = getattr(scores, kind)
        right = (scores.int8.argmax(1) == targets[held_out]).mean()
        folds.append(
            {
                "fold": i,
                "fine_tune_epochs": epochs,
                "fp32_accuracy": float((scores.fp32.argmax(1) == targets[held_out]).mean()),
                "int8_accuracy": float(right),
                "train_s": round(scores.train_s, 1),
                "convert_s": round(scores.convert_s, 1),
                "score_s": round(scores.score_s, 1),
            }
        )
        print(f"fold {i}: {folds[-1]}", flush=True)
    return {"targets": targets, **out, "folds": folds}


def one_fold(method, by_view, rows, held_out_files, train_files, seed, base, size) -> FoldScores:
    """Train one fold as CV did, convert it, quantise it, score its held-out photos."""
    import keras
    import onnx

    from bench.cv_int8 import features
    from convert.images import Photo, spread_sample
    from convert.pipeline import Options
    from convert.quantize import quantize_int8
    from convert.to_onnx import keras_to_onnx
    from lambda_function.model import open_session
    from training.finetune import fine_tune_fold

    targets, train_rows, held_out, n_classes = rows
    clock = time.perf_counter()
    run = fine_tune_fold(method, by_view, targets, train_rows, held_out, n_classes, seed, base)
    train_s = time.perf_counter() - clock
    clock = time.perf_counter()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    fp32, int8 = SCRATCH / "fold-fp32.onnx", SCRATCH / "fold-int8.onnx"
    onnx.save(keras_to_onnx(run.network, size), str(fp32))
    keras_logits = run.logits[-1]
    del run
    keras.backend.clear_session()
    gc.collect()
    photos = [Photo(path, int(targets[r])) for path, r in zip(train_files, train_rows, strict=True)]
    quantize_int8(fp32, int8, spread_sample(photos, Options.calibration_images), size)
    convert_s = time.perf_counter() - clock
    clock = time.perf_counter()
    fp32_logits, int8_logits = (
        features(
            open_session(path, intra_op_threads=os.cpu_count() or 1, quiet=True),
            held_out_files,
            size,
            desc=path.stem,
        ).astype(np.float64)
        for path in (fp32, int8)
    )
    return FoldScores(
        keras_logits, fp32_logits, int8_logits, train_s, convert_s, time.perf_counter() - clock
    )
