"""Stratified k-fold splits and interval estimates over out-of-fold predictions (numpy only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def stratified_folds(
    targets: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold index (0..k-1) of every sample; each class spread evenly over the folds.

    ``groups`` (one id per sample, e.g. a product id): the samples of a group share a fold,
    so no product is trained on and scored at once. Groups are dealt like samples, each
    by its most frequent class; with every group of one sample the folds are the same as
    without ``groups``.
    """
    if groups is None:
        return _deal(np.asarray(targets), k, seed)
    groups = np.asarray(groups)
    if len(groups) != len(targets):
        raise ValueError(
            f"Expected one group per sample ({len(targets)}). Received: {len(groups)} groups"
        )
    _, first, unit = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # units in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    unit = rank[unit.ravel()]
    unit_targets = np.array(
        [np.bincount(np.asarray(targets)[unit == u]).argmax() for u in range(len(order))]
    )
    try:
        return _deal(unit_targets, k, seed)[unit]
    except ValueError as exc:
        raise ValueError(f"{exc} (counting products: the groups of photos)") from exc


def _deal(targets: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified folds of independent samples.

    Each class's samples are shuffled (``seed``) and dealt round-robin, starting where
    the previous class stopped, so fold sizes differ by at most one and each fold holds
    each class in proportion. The same ``targets`` and ``seed`` give the same folds.
    """
    targets = np.asarray(targets)
    counts = np.bincount(targets) if len(targets) else np.array([], dtype=int)
    if not 2 <= k <= len(targets):
        raise ValueError(f"Expected 2 <= k <= {len(targets)} samples. Received: k={k}")
    if counts[counts > 0].min() < k:
        raise ValueError(
            f"Expected at least k={k} samples of every class. "
            f"Received class counts: {counts.tolist()}"
        )
    rng = np.random.default_rng(seed)
    fold = np.empty(len(targets), dtype=np.int64)
    offset = 0
    for label in np.flatnonzero(counts):
        members = rng.permutation(np.flatnonzero(targets == label))
        fold[members] = (offset + np.arange(len(members))) % k
        offset = (offset + len(members)) % k
    return fold


def fold_indices(fold: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(i, train_index, held_out_index)`` per fold."""
    for i in range(int(fold.max()) + 1):
        yield i, np.flatnonzero(fold != i), np.flatnonzero(fold == i)


def bootstrap_interval(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the rows of ``values``.

    Rows are photos (one out-of-fold prediction each): resampling photos measures how
    much the figure would move on another sample of photos from the same source.
    """
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    stats = np.array(
        [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(resamples)]
    )
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)
