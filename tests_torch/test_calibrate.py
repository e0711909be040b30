"""A PyTorch run's calibration: fitted like the Keras path's, so ``confident`` can be true."""

from __future__ import annotations

import numpy as np
import pytest

from torch_training.calibrate import CONFIDENT_PRECISION, fit
from training import calibration


def overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits twice as sharp as their accuracy deserves, 80% right."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.8, targets, (targets + 1) % 3)
    margin = rng.uniform(0.5, 6.0, n)
    logits = np.zeros((n, 3))
    logits[np.arange(n), predicted] = 2 * margin
    return logits, targets


def test_the_fit_is_training_calibrations_and_gives_a_usable_threshold() -> None:
    logits, targets = overconfident()
    record = fit(logits, targets)
    assert record["temperature"] == calibration.fit_temperature(logits, targets)
    assert record["temperature"] > 1  # overconfident logits are softened
    probs = calibration.softmax(logits, record["temperature"])
    cut = calibration.confidence_threshold(probs, targets, CONFIDENT_PRECISION)
    assert record["confidence_threshold"] == cut.threshold <= 1
    assert record["confident_precision"] >= CONFIDENT_PRECISION
    assert 0 < record["confident_coverage"] < 1
    assert record["fitted_on"].startswith("validation split (400 photos)")


def test_no_threshold_when_the_target_precision_is_out_of_reach() -> None:
    logits, targets = overconfident()
    targets = (targets + 1) % 3  # now 80% wrong
    record = fit(logits, targets)
    assert record["confidence_threshold"] is None
    assert record["confident_coverage"] == pytest.approx(0.0)
