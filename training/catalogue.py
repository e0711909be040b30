"""How far a photo is from the catalogue: a Mahalanobis distance on the pooled base features.

The classes' training photos are modelled as Gaussians with their own means and one shared
covariance (shrunk towards a multiple of the identity: 2,048 features, a few thousand
photos). A photo's distance is the smallest squared Mahalanobis distance to a class mean;
far from every class means probably none of them. ``bench.out_of_catalogue`` chose it over
the calibrated top probability and the energy score, out of fold (docs/model-quality.md).

The cut is fitted out of fold: each fold's photos are measured against Gaussians fitted
without them, and the cut is the distance that ``false_reject`` of those in-catalogue
photos exceed. The shipped Gaussians are fitted on every photo. TensorFlow-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lambda_function import files

SHRINK = 0.1
"""Covariance + SHRINK * (mean variance) * I."""
FALSE_REJECT = 0.02
"""Share of in-catalogue photos the shipped cut flags as out of catalogue (out of fold):
measured, 0.02 keeps more coverage than 0.05 for the same effect on non-clothing photos."""
FILE = "catalogue.npz"


@dataclass(frozen=True)
class Catalogue:
    """Class means and the Cholesky factor ``L`` of the shared precision (``P = L Lᵀ``)."""

    means: np.ndarray  # (classes, features)
    factor: np.ndarray  # (features, features), lower triangular

    @classmethod
    def fit(cls, features: np.ndarray, targets: np.ndarray, shrink: float = SHRINK) -> Catalogue:
        """Gaussians of ``features`` (N, D) by class ``targets`` (N,); every class present."""
        x = np.asarray(features, dtype=np.float64)
        classes = np.unique(targets)
        if x.ndim != 2 or len(x) != len(targets) or len(classes) < 2:
            raise ValueError(
                "Expected (N, D) features and N targets of at least two classes. Received: "
                f"features {x.shape}, targets {np.shape(targets)}, classes {classes.tolist()}"
            )
        means = np.stack([x[targets == c].mean(axis=0) for c in classes])
        centred = x - means[np.searchsorted(classes, targets)]
        cov = centred.T @ centred / len(x)
        cov += shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
        factor = np.linalg.cholesky(np.linalg.inv(cov))
        return cls(means, factor)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N,) the smallest squared Mahalanobis distance of each photo to a class mean."""
        g = np.asarray(features, dtype=np.float64) @ self.factor
        m = self.means @ self.factor
        d = (g * g).sum(axis=1, keepdims=True) - 2 * g @ m.T + (m * m).sum(axis=1)
        return d.min(axis=1)

    def save(self, path: Path) -> Path:
        """Write ``means`` and ``factor`` (float32) atomically as ``.npz``."""

        def write(staged: Path) -> None:
            with staged.open("wb") as stream:
                np.savez(
                    stream,
                    means=self.means.astype(np.float32),
                    factor=self.factor.astype(np.float32),
                )

        files.write_atomic(path, write)
        return path

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        with np.load(path) as saved:
            return cls(saved["means"].astype(np.float64), saved["factor"].astype(np.float64))


def out_of_fold_distances(
    features: np.ndarray, targets: np.ndarray, fold: np.ndarray
) -> np.ndarray:
    """Each photo's distance to Gaussians fitted on the other folds' photos."""
    distances = np.empty(len(targets))
    for i in np.unique(fold):
        held_out = fold == i
        catalogue = Catalogue.fit(features[~held_out], targets[~held_out])
        distances[held_out] = catalogue.distances(features[held_out])
    return distances


def cut(distances: np.ndarray, false_reject: float = FALSE_REJECT) -> float:
    """The distance that ``false_reject`` of the in-catalogue ``distances`` exceed."""
    if not 0 < false_reject < 1 or len(distances) == 0:
        raise ValueError(
            "Expected a false-reject rate in (0, 1) and some distances. Received: "
            f"false_reject={false_reject!r}, {len(distances)} distances"
        )
    return float(np.quantile(distances, 1 - false_reject))


def ship(
    features: np.ndarray,
    targets: np.ndarray,
    fold: np.ndarray,
    oof_probs: np.ndarray,
    folder: Path,
    precision: float,
) -> dict[str, Any]:
    """Fit the shipped catalogue on every photo, write it to ``folder``, and return the
    calibration's ``catalogue`` record and the ``confident`` threshold refitted on the
    out-of-fold photos the cut keeps (a flagged photo is never confident)."""
    from training.calibration import confidence_threshold

    distances = out_of_fold_distances(features, targets, fold)
    limit = cut(distances)
    kept = distances <= limit
    threshold = confidence_threshold(oof_probs[kept], targets[kept], precision)
    Catalogue.fit(features, targets).save(folder / FILE)
    return {
        "catalogue": {"file": FILE, "cut": limit, "false_reject": FALSE_REJECT},
        "confidence_threshold": threshold.threshold if threshold.threshold <= 1 else None,
        "confident_precision": threshold.precision,
        "confident_coverage": threshold.coverage * float(kept.mean()),
    }
