"""The served model's calibration: temperature and ``confident`` threshold, for a run.

The Keras path fits both on cross-validated out-of-fold logits (``training cv``). A
PyTorch run has one validation split and no folds, so both are fitted on that split's
logits of the saved (best-epoch) model, with :mod:`training.calibration`'s numpy fitting.
That split also chose the best epoch, so the threshold's precision on it is optimistic:
the figure to trust is the test split's, which the run reports beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training import calibration

CONFIDENT_PRECISION = 0.97
"""Precision ``confident`` answers must reach on the fitting split: the Keras CV's target
(``training.cv.CONFIDENT_PRECISION``, not imported: that module needs Keras)."""


def fit(logits: np.ndarray, targets: np.ndarray, split: str = "validation") -> dict[str, Any]:
    """The manifest's ``calibration`` record for logits of ``split`` (``convert`` reads it)."""
    temperature = calibration.fit_temperature(logits, targets)
    probs = calibration.softmax(logits, temperature)
    cut = calibration.confidence_threshold(probs, targets, CONFIDENT_PRECISION)
    return {
        "temperature": temperature,
        "confidence_threshold": cut.threshold if cut.threshold <= 1 else None,
        "confident_precision": cut.precision,
        "confident_coverage": cut.coverage,
        "fitted_on": f"{split} split ({len(targets)} photos), which also chose the best epoch",
    }
