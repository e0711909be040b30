"""The one training engine: a method fitted on some rows of the cached inputs, then saved.

Every command goes through it: ``cv`` trains a method per fold (``training.cv``), ``cv
--ship`` on every labelled photo, ``train`` on the train split with the validation split
choosing the epoch. The network is then the frozen (or fine-tuned) base with the trained
head, checked against the head on base features and saved as one ``.h5``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import data, features
from training.data import Dataset
from training.methods import FEATURES, HeadRun, Method, train_head

CHECKPOINT = "xception_v1_{epoch:02d}_{accuracy:.3f}.h5"


def inputs(
    methods: Sequence[Method],
    dataset: Dataset,
    image_size: int,
    weights: str | None,
    cache_dir: Path | None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every cached input ``methods`` read, for every labelled photo; and the targets."""
    from training.finetune import labelled_activations

    x, targets = features.labelled_features(dataset, image_size, weights, cache_dir)
    by_input = {FEATURES: x}
    for method in methods:
        if method.fine_tune and method.activations_view not in by_input:
            by_input[method.activations_view] = labelled_activations(
                dataset, method.fine_tune, image_size, weights, cache_dir
            )
    return by_input, targets


@dataclass(frozen=True)
class Fitted:
    """A trained network (base + head), its head alone, and the per-epoch record."""

    model: Any  # keras.Model: scaled pixels -> logits
    top: Any  # keras.Model: pooled features -> logits
    run: HeadRun


def fit(
    method: Method,
    by_input: dict[str, np.ndarray],
    targets: np.ndarray,
    train_rows: np.ndarray,
    held_out_rows: np.ndarray,
    n_classes: int,
    seed: int,
    base: Callable[[], Any],
    inner_rows: np.ndarray | None = None,
    *,
    keep_best: bool = False,
) -> Fitted:
    """``method`` trained on ``train_rows`` as a complete network on a fresh ``base()``.

    The network has the last epoch's weights, or with ``keep_best`` those of the first
    best epoch on the inner holdout (``inner_rows``, else the method's own).
    """
    if method.fine_tune:
        from training.finetune import fine_tune_fold

        run = fine_tune_fold(
            method,
            by_input,
            targets,
            train_rows,
            held_out_rows,
            n_classes,
            seed,
            base,
            inner_rows,
            keep_best=keep_best,
        )
        return Fitted(run.network, run.top, run)
    from training.model import make_network

    run = train_head(
        method, by_input, targets, train_rows, held_out_rows, n_classes, seed, inner_rows
    )
    frozen = base()
    network = make_network(
        frozen.input_shape[1],
        method.size_inner,
        method.droprate,
        n_classes=n_classes,
        l2=method.l2,
        base=frozen,
    )
    kept = run.best_weights if keep_best and run.best_weights is not None else None
    network.top.set_weights(kept or run.top.get_weights())
    return Fitted(network.model, network.top, run)


def save(fitted: Fitted, dataset: Dataset, run_dir: Path, epoch: int, accuracy: float) -> Path:
    """Check the network against its head, then save it as the only ``.h5`` in ``run_dir``."""
    check_full_model(fitted.model, fitted.top, dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob("*.h5"):
        old.unlink()
    checkpoint = run_dir / CHECKPOINT.format(epoch=epoch, accuracy=accuracy)
    fitted.model.save(checkpoint)
    return checkpoint


def check_full_model(model, top, dataset: Dataset) -> None:
    """The network must give the head's logits on its own base's features (8 photos)."""
    from lambda_function.preprocessing import scale

    image_size = model.input_shape[1]
    paths = [f for split in dataset.splits for f in dataset[split].files[:3]][:8]
    pixels = scale(np.stack([data.decode_file(path, image_size) for path in paths]))
    base = next(layer for layer in model.layers if layer.name.startswith("xception"))
    expected = np.asarray(top(base.predict_on_batch(pixels), training=False))
    got = np.asarray(model.predict_on_batch(pixels))
    if not np.allclose(expected, got, atol=1e-4):
        raise RuntimeError(
            "Expected the saved network to reproduce the trained head on base features. "
            f"Received a max logit difference of {np.abs(expected - got).max():.2e}"
        )


def fresh_base(image_size: int, weights: str | None) -> Callable[[], Any]:
    """A builder of fresh frozen bases (a fine-tuned one is modified, so each fit gets its own)."""

    def build():
        from training.model import make_base

        return make_base(image_size, weights)

    return build


def path(method: Method) -> str:
    """How a saved model was trained, in words (the manifest's ``config.path``)."""
    if not method.fine_tune:
        return "fast (cached features)"
    text = f"fine-tune from {method.fine_tune} (cached activations)"
    first, last = method.fine_tune_average_from, method.fine_tune_epochs
    if first and last >= first:
        text += f", weights averaged over fine-tuning epochs {first}-{last}"
    return text
