"""Cross-validation's parts: the folds, the intervals, temperature scaling, the threshold."""

from __future__ import annotations

import numpy as np
import pytest

from training import calibration
from training.cv import cross_fitted_temperature, paired_difference
from training.folds import bootstrap_interval, fold_indices, stratified_folds


def imbalanced_targets(seed: int = 0) -> np.ndarray:
    counts = [40, 7, 23, 11, 5, 64]  # every class has >= k = 5 photos
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))


def test_every_photo_is_in_exactly_one_fold() -> None:
    targets = imbalanced_targets()
    fold = stratified_folds(targets, 5, seed=3)
    held_out = np.concatenate([rows for _, _, rows in fold_indices(fold)])
    assert sorted(held_out.tolist()) == list(range(len(targets)))
    for _, train, rows in fold_indices(fold):
        assert not set(train) & set(rows)
        assert len(train) + len(rows) == len(targets)


def test_folds_are_stratified_and_balanced() -> None:
    targets = imbalanced_targets()
    fold = stratified_folds(targets, 5, seed=3)
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 1
    for label, count in enumerate(np.bincount(targets)):
        per_fold = np.bincount(fold[targets == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (label, count, per_fold)


def test_the_seed_decides_the_folds() -> None:
    targets = imbalanced_targets()
    first = stratified_folds(targets, 5, seed=3)
    assert np.array_equal(first, stratified_folds(targets, 5, seed=3))
    assert not np.array_equal(first, stratified_folds(targets, 5, seed=4))


@pytest.mark.parametrize(
    "targets, k, message",
    [
        (np.array([0, 0, 1, 1]), 1, "Expected 2 <= k <= 4 samples. Received: k=1"),
        (np.array([0, 0, 0, 1, 1, 1, 2]), 3, r"at least k=3 samples of every class"),
    ],
)
def test_impossible_folds_say_why(targets: np.ndarray, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stratified_folds(targets, k, seed=0)


def test_the_bootstrap_interval_covers_the_mean_and_narrows_with_more_photos() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.random(100) < 0.9, rng.random(3000) < 0.9
    lo_s, hi_s = bootstrap_interval(small, seed=0)
    lo_l, hi_l = bootstrap_interval(large, seed=0)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    # ~ the normal approximation 2 * 1.96 * sqrt(p (1 - p) / n) for the large sample
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * np.sqrt(0.09 / 3000), rel=0.15)


def overconfident_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits 3x sharper than the softmax the targets were actually drawn from."""
    rng = np.random.default_rng(seed)
    honest = rng.normal(0, 1.5, (n, 10))
    honest[np.arange(n), rng.integers(0, 10, n)] += 2.5
    p = calibration.softmax(honest)
    targets = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return honest * 3.0, targets


def test_temperature_scaling_lowers_nll_on_held_out_logits() -> None:
    fit_logits, fit_targets = overconfident_logits(2000, seed=0)
    held_logits, held_targets = overconfident_logits(2000, seed=1)
    t = calibration.fit_temperature(fit_logits, fit_targets)
    assert t == pytest.approx(3.0, rel=0.15)  # it undoes the sharpening
    before = calibration.nll(held_logits, held_targets)
    after = calibration.nll(held_logits, held_targets, t)
    assert after < before - 0.2
    ece_before = calibration.ece(calibration.softmax(held_logits), held_targets)
    ece_after = calibration.ece(calibration.softmax(held_logits, t), held_targets)
    assert ece_after < 0.05 < ece_before


def test_the_fitted_temperature_minimises_nll() -> None:
    logits, targets = overconfident_logits(1000, seed=2)
    t = calibration.fit_temperature(logits, targets)
    best = calibration.nll(logits, targets, t)
    for other in (t * 0.9, t * 1.1, 1.0):
        assert calibration.nll(logits, targets, other) > best


def test_cross_fitted_temperatures_come_from_the_other_folds() -> None:
    logits, targets = overconfident_logits(500, seed=3)
    fold = stratified_folds(targets, 5, seed=0)
    probs, temperatures = cross_fitted_temperature(logits, targets, fold)
    for i, others, rows in fold_indices(fold):
        t = calibration.fit_temperature(logits[others], targets[others])
        assert temperatures[i] == pytest.approx(t)
        np.testing.assert_allclose(probs[rows], calibration.softmax(logits[rows], t))


def test_ece_of_a_hand_made_case() -> None:
    # Two photos at 0.95 (one right), two at 0.65 (both right): |0.5-0.95|/2 + |1-0.65|/2
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.35, 0.65]])
    targets = np.array([0, 1, 0, 1])
    assert calibration.ece(probs, targets) == pytest.approx((0.45 + 0.35) / 2)


def test_the_confidence_threshold_reaches_the_precision_with_the_most_coverage() -> None:
    # top probabilities 0.99 .. 0.50; the 4th most confident answer is the first wrong one
    top = np.array([0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5])
    right = np.array([1, 1, 1, 0, 1, 1, 0, 1], dtype=bool)
    probs = np.c_[top, 1 - top]
    targets = np.where(right, 0, 1)
    cut = calibration.confidence_threshold(probs, targets, target=0.8)
    assert cut.threshold == 0.7 and cut.coverage == 6 / 8 and cut.precision == 5 / 6
    strict = calibration.confidence_threshold(probs, targets, target=1.0)
    assert strict.threshold == 0.9 and strict.coverage == 3 / 8
    assert calibration.apply_threshold(probs, targets, 0.9) == (1.0, 3 / 8)


def test_no_threshold_reaches_an_impossible_precision() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    cut = calibration.confidence_threshold(probs, np.array([1, 1]), target=0.97)
    assert cut.threshold > 1 and cut.coverage == 0.0


def test_the_paired_difference_counts_photos_one_gets_right_and_the_other_not() -> None:
    targets = np.array([0, 1, 0, 1, 0])
    a = np.eye(2)[[0, 1, 0, 1, 1]]  # 4 right
    b = np.eye(2)[[0, 1, 1, 0, 1]]  # 2 right
    gain, (lo, hi) = paired_difference(a, b, targets, resamples=500)
    assert gain == pytest.approx(0.4)
    assert lo <= 0.4 <= hi
