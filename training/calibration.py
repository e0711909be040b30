"""Probabilities that mean what they say: temperature scaling, ECE, a confidence threshold.

numpy only (no TensorFlow): fitted on out-of-fold logits by ``python -m training cv``,
and the same softmax-of-``logits / T`` is what the serving path applies
(:func:`lambda_function.model.softmax` with the model's metadata ``temperature``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BINS = 10
MIN_T, MAX_T = 0.05, 20.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64, stable for large logits)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true class under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return float(np.mean(log_norm - z[np.arange(len(z)), targets]))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T > 0 that minimises :func:`nll` on (held-out) logits.

    NLL is convex in 1/T, hence unimodal in log T: golden-section search on log T over
    [0.05, 20] finds it to ~1e-6 without a gradient or an optimiser dependency.
    """
    _check(logits, targets)
    lo, hi = np.log(MIN_T), np.log(MAX_T)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, targets, np.exp(a)), nll(logits, targets, np.exp(b))
    while hi - lo > 1e-6:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, targets, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, targets, np.exp(b))
    return float(np.exp((lo + hi) / 2))


@dataclass(frozen=True)
class Reliability:
    """Per-bin confidence vs accuracy (equal-width bins of the top probability)."""

    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # photos per bin
    confidence: np.ndarray  # mean top probability per bin (nan if empty)
    accuracy: np.ndarray  # accuracy per bin (nan if empty)

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted |accuracy - confidence| over bins."""
        used = self.counts > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float(np.sum(gaps * self.counts[used]) / self.counts.sum())


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = N_BINS) -> Reliability:
    """Bin photos by their top probability (``(k-1)/bins < p <= k/bins``) and compare."""
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.ceil(top * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=top, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return Reliability(edges, counts, confidence, accuracy)


def ece(probs: np.ndarray, targets: np.ndarray, bins: int = N_BINS) -> float:
    """Expected calibration error with ``bins`` equal-width bins (10: the usual figure)."""
    return reliability(probs, targets, bins).ece


def top_k_correct(probs: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per photo: is the true class among the ``k`` most probable?"""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (top == targets[:, None]).any(axis=1)


@dataclass(frozen=True)
class Threshold:
    """The top-probability cut-off for ``confident``, and what it gives on the data."""

    threshold: float
    precision: float  # accuracy among photos at or above the threshold
    coverage: float  # share of photos at or above it
    target: float


def confidence_threshold(probs: np.ndarray, targets: np.ndarray, target: float) -> Threshold:
    """The lowest cut-off on the top probability whose answers are right >= ``target``.

    Photos are sorted by top probability, most confident first; the cut-off is the
    largest prefix (no tie split) whose accuracy is >= ``target``: the most coverage at
    that precision. If no prefix reaches it, the threshold is above 1 (never confident).
    """
    _check(probs, targets)
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    order = np.argsort(-top, kind="stable")
    top, correct = top[order], correct[order]
    precision = np.cumsum(correct) / np.arange(1, len(top) + 1)
    # A cut-off can only sit where the next photo's probability is strictly lower.
    last_of_tie = np.r_[top[1:] < top[:-1], True]
    ok = np.flatnonzero((precision >= target) & last_of_tie)
    if len(ok) == 0:
        return Threshold(float(np.nextafter(1.0, 2.0)), 1.0, 0.0, target)
    end = int(ok[-1])
    return Threshold(float(top[end]), float(precision[end]), (end + 1) / len(top), target)


def apply_threshold(
    probs: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray
) -> tuple[float, float]:
    """(precision, coverage) of ``top probability >= threshold`` (one, or one per photo)."""
    confident = probs.max(axis=1) >= threshold
    if not confident.any():
        return 1.0, 0.0
    correct = probs.argmax(axis=1) == targets
    return float(correct[confident].mean()), float(confident.mean())


def _check(scores: np.ndarray, targets: np.ndarray) -> None:
    if scores.ndim != 2 or len(scores) != len(targets) or len(scores) == 0:
        raise ValueError(
            "Expected (N, classes) scores and N targets, N >= 1. "
            f"Received: scores {scores.shape}, targets {np.shape(targets)}"
        )
