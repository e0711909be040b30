"""Judge a checkpoint on a split: accuracy, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training import features, plots
from training.data import Dataset


def evaluate_checkpoint(
    checkpoint: Path, dataset: Dataset, split: str = "test", plot: Path | None = None
) -> tuple[dict, np.ndarray]:
    """Reload ``checkpoint`` from disk and score it on ``split``; return (metrics, logits)."""
    import keras

    model = keras.models.load_model(checkpoint, compile=False)
    size = model.input_shape[1]
    logits = features.stream(model, dataset[split].files, size, desc=f"{split}@{size}")
    targets = dataset[split].targets
    metrics = classification_metrics(targets, logits.argmax(axis=1), dataset.labels)
    metrics["split"] = split
    if plot is not None:
        plots.confusion_matrix(
            np.array(metrics["confusion_matrix"]),
            dataset.labels,
            plot,
            f"{split}: accuracy {metrics['accuracy']:.3f} ({checkpoint.name})",
        )
        metrics["confusion_matrix_png"] = plot.name
    return metrics, logits


def classification_metrics(
    targets: np.ndarray, predicted: np.ndarray, labels: Sequence[str]
) -> dict:
    """Accuracy, per-class precision/recall/support and the confusion matrix (rows: true)."""
    n = len(labels)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (targets, predicted), 1)
    correct = np.diag(matrix)
    predicted_count, true_count = matrix.sum(axis=0), matrix.sum(axis=1)
    per_class = {
        label: {
            "precision": _ratio(correct[i], predicted_count[i]),
            "recall": _ratio(correct[i], true_count[i]),
            "support": int(true_count[i]),
        }
        for i, label in enumerate(labels)
    }
    return {
        "accuracy": _ratio(correct.sum(), matrix.sum()),
        "n_images": int(matrix.sum()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def _ratio(a: int, b: int) -> float:
    return float(a / b) if b else 0.0
