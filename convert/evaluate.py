"""Score ONNX models on labelled photos, as the Lambda sees them: accuracy, agreement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.images import Photo
from convert.runtime import onnx_logits, open_session, progress
from lambda_function import preprocessing

POOLED = "validation+test"


@dataclass(frozen=True)
class EvalSet:
    """Labelled photos and their uint8 pixels, decoded and resized once."""

    photos: tuple[Photo, ...]
    pixels: np.ndarray  # (N, size, size, 3) uint8

    @property
    def labels(self) -> np.ndarray:
        return np.array([p.label for p in self.photos])


@dataclass(frozen=True)
class Scores:
    """A model's logits and accuracy on each evaluation split (and on all of them)."""

    logits: Mapping[str, np.ndarray]
    accuracy: Mapping[str, float]


def load_eval_sets(splits: Mapping[str, Sequence[Photo]], image_size: int) -> dict[str, EvalSet]:
    """Decode each split's photos with the serving package's preprocessing."""
    return {
        name: EvalSet(tuple(photos), load_pixels(photos, image_size))
        for name, photos in splits.items()
    }


def load_pixels(photos: Sequence[Photo], image_size: int) -> np.ndarray:
    """uint8 pixels of ``photos`` as the Lambda decodes and resizes them."""
    return np.stack(
        [
            preprocessing.load_pixels(p.path.read_bytes(), image_size)
            for p in progress(photos, "decoding")
        ]
    )


def score(path: Path, eval_sets: Mapping[str, EvalSet]) -> Scores:
    """Logits and top-1 accuracy of the model at ``path`` on every set, and pooled."""
    session = open_session(path)
    logits = {name: onnx_logits(session, s.pixels, scale=True) for name, s in eval_sets.items()}
    hits = {name: logits[name].argmax(axis=1) == s.labels for name, s in eval_sets.items()}
    accuracy = {name: float(h.mean()) for name, h in hits.items()}
    accuracy[POOLED] = float(np.concatenate(list(hits.values())).mean())
    return Scores(logits=logits, accuracy=accuracy)


def compare_to(baseline: Scores, candidate: Scores) -> dict[str, Any]:
    """Accuracy, top-1 agreement and max |Δ logits| of ``candidate`` against fp32."""
    agree = {
        name: baseline.logits[name].argmax(axis=1) == candidate.logits[name].argmax(axis=1)
        for name in baseline.logits
    }
    return {
        "accuracy": dict(candidate.accuracy),
        "accuracy_fp32": dict(baseline.accuracy),
        "top1_agreement_with_fp32": {
            **{name: float(a.mean()) for name, a in agree.items()},
            POOLED: float(np.concatenate(list(agree.values())).mean()),
        },
        "max_abs_diff_vs_fp32": max(
            float(np.abs(baseline.logits[n] - candidate.logits[n]).max()) for n in baseline.logits
        ),
    }
