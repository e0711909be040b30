"""Cross-validation over every labelled photo: an honest estimate, per method.

The test split has been looked at too often to judge a choice on. Instead, all labelled
photos (train + validation + test) are dealt into ``k`` stratified folds; each method
trains ``k`` heads on cached base features, each predicting the one fold it never saw.
Every photo then has exactly one out-of-fold (OOF) prediction, and the figures are
computed on those 3,781 predictions.

Every choice made *from* the OOF predictions is cross-fitted so that no photo judges
the choice it helped make: a fold's epoch count, temperature and confidence threshold
come from the *other* folds' OOF predictions. The shipped values (epochs, temperature,
threshold) are then fitted on all OOF predictions at once.

Intervals (95%) are percentile bootstraps over photos (2,000 resamples): they say how
much a figure would move on another sample of photos from the same source, which is
the question asked of the unseen photos. A t-interval over 5 folds would rest on 4
degrees of freedom and on folds that share training photos (not independent). Methods
are compared with a *paired* bootstrap of the accuracy difference on the same photos.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import calibration
from training.folds import bootstrap_interval, fold_indices, stratified_folds
from training.methods import FEATURES, Method, train_head

CONFIDENT_PRECISION = 0.97


@dataclass
class MethodResult:
    """One method's out-of-fold predictions and the epochs behind them."""

    method: Method
    oof_logits: np.ndarray  # (N, classes): each photo predicted by the fold that never saw it
    fold_epochs: list[int]  # epochs used for each fold's predictions (cross-fitted)
    epochs: int | None  # epochs for a final model on all photos (None: chosen on a holdout)
    epoch_accuracy: np.ndarray  # (epochs,) OOF accuracy if every fold stopped at that epoch
    seconds: float


def cross_validate(
    method: Method,
    inputs: Mapping[str, np.ndarray],
    targets: np.ndarray,
    fold: np.ndarray,
    n_classes: int,
    seed: int,
    log: Callable[[str], None] = print,
    cache_dir: Path | None = None,
    base: Callable[[], Any] | None = None,
) -> MethodResult:
    """Train ``method`` once per fold; gather each photo's out-of-fold logits.

    With ``cache_dir``, the per-epoch logits are kept there under a key of everything
    that decides them (method, folds, seed, features), so a rerun reuses them.
    ``base`` builds a fresh frozen base, for methods that fine-tune it.
    """
    start = time.perf_counter()
    path = _cache_file(cache_dir, method, inputs, targets, fold, seed)
    if path is not None and path.is_file():
        saved = np.load(path)
        per_epoch, inner_best, seconds = saved["per_epoch"], saved["inner_best"].tolist(), 0.0
        log(f"  {method.name}: reused {path}")
    else:
        per_epoch, inner_best = _train_folds(
            method, inputs, targets, fold, n_classes, seed, log, base
        )
        seconds = time.perf_counter() - start
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, per_epoch=per_epoch, inner_best=np.array(inner_best, dtype=int))
    correct = per_epoch.argmax(axis=2) == targets  # (epochs, N)
    epoch_accuracy = correct.mean(axis=1)
    if inner_best:
        fold_epochs, epochs = inner_best, None
    else:
        fold_epochs = [
            int(np.argmax(correct[:, fold != i].mean(axis=1))) + 1 for i in range(fold.max() + 1)
        ]
        epochs = int(np.argmax(epoch_accuracy)) + 1
    oof = np.empty((len(targets), n_classes))
    for i, _, held_out in fold_indices(fold):
        oof[held_out] = per_epoch[fold_epochs[i] - 1, held_out]
    return MethodResult(method, oof, fold_epochs, epochs, epoch_accuracy, seconds)


def _train_folds(
    method: Method,
    inputs: Mapping[str, np.ndarray],
    targets: np.ndarray,
    fold: np.ndarray,
    n_classes: int,
    seed: int,
    log: Callable[[str], None],
    base: Callable[[], Any] | None = None,
) -> tuple[np.ndarray, list[int]]:
    start = time.perf_counter()
    per_epoch = np.zeros((method.scored_epochs, len(targets), n_classes), dtype=np.float32)
    inner_best: list[int] = []
    for i, train_rows, held_out in fold_indices(fold):
        if method.fine_tune:
            if base is None:
                raise ValueError(f"Expected a base to fine-tune for {method.name}. Received none.")
            from training.finetune import fine_tune_fold

            run = fine_tune_fold(
                method, inputs, targets, train_rows, held_out, n_classes, seed + i, base
            )
        else:
            run = train_head(method, inputs, targets, train_rows, held_out, n_classes, seed + i)
        per_epoch[:, held_out] = run.logits
        accuracy = (run.logits.argmax(axis=2) == targets[held_out]).mean(axis=1)
        if run.inner_accuracy is not None:  # first best epoch on the inner holdout
            inner_best.append(int(np.argmax(run.inner_accuracy)) + 1)
        log(
            f"  {method.name} fold {i}: {time.perf_counter() - start:.0f} s, held-out accuracy "
            f"by epoch {' '.join(f'{a:.3f}' for a in accuracy)}"
        )
    return per_epoch, inner_best


def _cache_file(
    cache_dir: Path | None,
    method: Method,
    inputs: Mapping[str, np.ndarray],
    targets: np.ndarray,
    fold: np.ndarray,
    seed: int,
) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(method.to_dict(), sort_keys=True).encode())
    for array in (targets, fold, *(inputs[v][:64] for v in method.inputs)):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(f"{seed}:{len(inputs[FEATURES])}".encode())
    return cache_dir / f"{method.name}-{digest.hexdigest()[:16]}.npz"


def cross_fitted_temperature(
    logits: np.ndarray, targets: np.ndarray, fold: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """Calibrated probabilities where each fold's temperature is fitted on the other folds."""
    probs = np.empty_like(logits)
    temperatures = []
    for _, others, held_out in fold_indices(fold):
        t = calibration.fit_temperature(logits[others], targets[others])
        probs[held_out] = calibration.softmax(logits[held_out], t)
        temperatures.append(t)
    return probs, temperatures


def cross_fitted_threshold(
    probs: np.ndarray, targets: np.ndarray, fold: np.ndarray, target: float
) -> tuple[float, float]:
    """(precision, coverage) of ``confident`` on each fold with a threshold from the others."""
    cuts = np.empty(len(targets))
    for _, others, held_out in fold_indices(fold):
        cut = calibration.confidence_threshold(probs[others], targets[others], target).threshold
        cuts[held_out] = cut
    return calibration.apply_threshold(probs, targets, cuts)


def evaluate(
    result: MethodResult,
    targets: np.ndarray,
    fold: np.ndarray,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Every figure of one method, with 95% bootstrap intervals over photos."""
    logits = result.oof_logits
    raw = calibration.softmax(logits)
    calibrated, fold_t = cross_fitted_temperature(logits, targets, fold)
    temperature = calibration.fit_temperature(logits, targets)
    final = calibration.softmax(logits, temperature)
    threshold = calibration.confidence_threshold(final, targets, CONFIDENT_PRECISION)
    held_precision, held_coverage = cross_fitted_threshold(
        calibrated, targets, fold, CONFIDENT_PRECISION
    )
    correct = raw.argmax(axis=1) == targets
    top3 = calibration.top_k_correct(raw, targets, 3)

    def interval(values, statistic=np.mean):
        return bootstrap_interval(values, statistic, resamples=resamples, seed=seed)

    def ece_of(probs):
        rows = np.c_[probs, targets]
        return calibration.ece(probs, targets), interval(
            rows, lambda r: calibration.ece(r[:, :-1], r[:, -1].astype(int))
        )

    ece_raw, ece_raw_ci = ece_of(raw)
    ece_cal, ece_cal_ci = ece_of(calibrated)
    folds = [float(correct[fold == i].mean()) for i in range(fold.max() + 1)]
    return {
        "method": result.method.name,
        "description": result.method.description,
        "accuracy": float(correct.mean()),
        "accuracy_ci": interval(correct),
        "top3": float(top3.mean()),
        "top3_ci": interval(top3),
        "fold_accuracy": folds,
        "fold_accuracy_std": float(np.std(folds, ddof=1)),
        "nll": calibration.nll(logits, targets),
        "nll_calibrated": _nll_probs(calibrated, targets),
        "ece": ece_raw,
        "ece_ci": ece_raw_ci,
        "ece_calibrated": ece_cal,
        "ece_calibrated_ci": ece_cal_ci,
        "mean_confidence_calibrated": float(calibrated.max(axis=1).mean()),
        "temperature": temperature,
        "fold_temperatures": fold_t,
        "confidence_threshold": threshold.threshold,
        "confident_precision": threshold.precision,
        "confident_coverage": threshold.coverage,
        "confident_precision_held_out": held_precision,
        "confident_coverage_held_out": held_coverage,
        "epochs": result.epochs,
        "fold_epochs": result.fold_epochs,
        "epoch_accuracy": [round(float(a), 4) for a in result.epoch_accuracy],
        "seconds": round(result.seconds, 1),
        "config": result.method.to_dict(),
    }


def paired_difference(
    a: np.ndarray, b: np.ndarray, targets: np.ndarray, *, resamples: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Accuracy of logits ``a`` minus ``b`` on the same photos, with a paired 95% interval."""
    diff = (a.argmax(axis=1) == targets).astype(float) - (b.argmax(axis=1) == targets)
    return float(diff.mean()), bootstrap_interval(diff, resamples=resamples, seed=seed)


def choose(rows: Sequence[dict], reference: str) -> str:
    """The method to ship: the most accurate one whose gain over ``reference`` has a 95%
    interval above zero (the first of equals); ``reference`` itself when none has."""
    winners = [r for r in rows if r["kept"]]
    if not winners:
        return reference
    return max(winners, key=lambda r: r["accuracy"])["method"]


def run(
    methods: Sequence[Method],
    inputs: Mapping[str, np.ndarray],
    targets: np.ndarray,
    *,
    k: int,
    seed: int,
    n_classes: int,
    reference: str = "today",
    log: Callable[[str], None] = print,
    cache_dir: Path | None = None,
    base: Callable[[], Any] | None = None,
    groups: np.ndarray | None = None,
) -> tuple[list[dict], dict[str, MethodResult], np.ndarray]:
    """Cross-validate every method on the same folds; rows of figures, results, folds.

    ``base`` builds a fresh frozen base, for methods that fine-tune it; ``groups`` (a
    product id per photo) keeps each product's photos in one fold.
    """
    fold = stratified_folds(targets, k, seed, groups)
    results: dict[str, MethodResult] = {}
    rows = []
    for method in methods:
        log(f"{method.name}: {method.description}")
        results[method.name] = cross_validate(
            method, inputs, targets, fold, n_classes, seed, log, cache_dir, base
        )
        rows.append(evaluate(results[method.name], targets, fold, seed=seed))
        log(f"  accuracy {rows[-1]['accuracy']:.4f} {rows[-1]['accuracy_ci']}")
    if reference in results:
        reference_logits = results[reference].oof_logits
        for row in rows:
            logits = results[row["method"]].oof_logits
            gain, ci = paired_difference(logits, reference_logits, targets)
            row["gain_vs_reference"], row["gain_ci"] = gain, ci
            row["kept"] = row["method"] != reference and ci[0] > 0
    return rows, results, fold


def _nll_probs(probs: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1))))
