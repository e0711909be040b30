"""Judge a checkpoint on a split: accuracy, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from training import pipeline, plots
from training.workspace import Workspace


def evaluate_checkpoint(
    ws: Workspace, checkpoint: Path, image_size: int, split: str = "test", plot: Path | None = None
) -> tuple[dict, np.ndarray]:
    """Reload ``checkpoint`` from disk and score it on ``split``; return (metrics, logits)."""
    model = keras.models.load_model(checkpoint, compile=False)
    batches = pipeline.make_dataset(
        ws.pixels(split, image_size), ws.targets(split), len(ws.labels), batch_size=32
    )
    logits = np.asarray(model.predict(batches, verbose=ws.verbose))
    metrics = classification_metrics(ws.targets(split), logits.argmax(axis=1), ws.labels)
    metrics["split"] = split
    if plot is not None:
        plots.confusion_matrix(
            np.array(metrics["confusion_matrix"]),
            ws.labels,
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
