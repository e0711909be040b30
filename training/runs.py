"""A run's life, written once: a fresh folder, fit keeping the best epoch, the ``.h5``, the result.

Every way of training (the fast path on cached features, the full path through the
augmented images, fine-tuning on cached activations) goes through the same steps:

1. :func:`fresh_dir`: ``output_dir/runs/<name>/``, emptied of an older run of that name;
2. :func:`fit_best` (or Keras' ``ModelCheckpoint`` on the full path): after ``fit()`` the
   in-memory model is the *last* epoch, so the best epoch's weights are kept and restored;
3. :func:`save_best`: the complete model, named :data:`CHECKPOINT` after its epoch;
4. :func:`finish`: ``history.json`` next to it, and the :class:`RunResult` handed over.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.config import RunConfig
from training.manifest import RunRecord

CHECKPOINT = "xception_v1_{epoch:02d}_{val_accuracy:.3f}.h5"


@dataclass(frozen=True)
class RunResult(RunRecord):
    """A finished run: its record, plus what the live process can still compute with."""

    top: keras.Model | None = None  # fast path: the trained top (features -> logits)
    fast_predict: Callable[[str], np.ndarray] | None = None  # cached-input logits of a split


@dataclass(frozen=True)
class Fit:
    """What ``fit()`` measured: the history (plain floats) and the best epoch (1-based)."""

    history: dict[str, list[float]]
    best_epoch: int
    seconds: float

    @property
    def best_val_accuracy(self) -> float:
        return self.history["val_accuracy"][self.best_epoch - 1]


class BestTop(keras.callbacks.Callback):
    """``ModelCheckpoint(save_best_only, monitor=val_accuracy, mode=max)``, in memory.

    Keeps the best epoch's weights (strictly better only, as Keras does: a tie keeps the
    earlier epoch); the complete model is saved once, after ``fit()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.best = -np.inf
        self.best_epoch = 0
        self.best_weights: list | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get("val_accuracy")
        if value is not None and value > self.best:
            self.best, self.best_epoch = value, epoch + 1
            self.best_weights = self.model.get_weights()


def fresh_dir(output_dir: Path, cfg: RunConfig) -> Path:
    """``output_dir/runs/<run name>/``, empty (an older run of the same name is removed)."""
    run_dir = output_dir / "runs" / cfg.run_name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


History = dict[str, list[float]]


def timed_fit(model: keras.Model, *args: Any, **kwargs: Any) -> tuple[History, float]:
    """``model.fit(...)``: its history as plain floats, and the seconds it took."""
    start = time.perf_counter()
    history = model.fit(*args, **kwargs).history
    seconds = time.perf_counter() - start
    return {key: [float(v) for v in values] for key, values in history.items()}, seconds


def fit_best(model: keras.Model, *args: Any, callbacks: list | None = None, **kwargs: Any) -> Fit:
    """``model.fit(...)``, then the best epoch's weights (by val_accuracy) put back into it."""
    keeper = BestTop()
    history, seconds = timed_fit(model, *args, callbacks=[*(callbacks or []), keeper], **kwargs)
    if keeper.best_weights is None:
        raise RuntimeError(f"Expected val_accuracy in the fit history. Received: {list(history)}")
    model.set_weights(keeper.best_weights)
    return Fit(history, keeper.best_epoch, seconds)


def save_best(model: keras.Model, run_dir: Path, fit: Fit) -> Path:
    """Save the complete ``model`` as the best epoch's checkpoint in ``run_dir``."""
    path = run_dir / CHECKPOINT.format(epoch=fit.best_epoch, val_accuracy=fit.best_val_accuracy)
    model.save(path)
    return path


def finish(
    cfg: RunConfig,
    run_dir: Path,
    fit: Fit,
    trainable_params: int,
    *,
    top: keras.Model | None = None,
    fast_predict: Callable[[str], np.ndarray] | None = None,
) -> RunResult:
    """Write ``history.json`` and describe the run whose best checkpoint is in ``run_dir``."""
    (run_dir / "history.json").write_text(json.dumps(fit.history, indent=1))
    return RunResult(
        config=cfg,
        checkpoint=checkpoint_of(run_dir, fit.best_epoch),
        best_epoch=fit.best_epoch,
        best_val_accuracy=fit.best_val_accuracy,
        history=fit.history,
        seconds=fit.seconds,
        trainable_params=trainable_params,
        top=top,
        fast_predict=fast_predict,
    )


def checkpoint_of(run_dir: Path, epoch: int) -> Path:
    """The one checkpoint file of ``epoch`` in ``run_dir``."""
    matches = sorted(run_dir.glob(f"xception_v1_{epoch:02d}_*.h5"))
    if len(matches) != 1:
        raise RuntimeError(
            f"Expected one checkpoint for the best epoch {epoch} in {run_dir}. "
            f"Found: {[p.name for p in matches]}"
        )
    return matches[0]


def count_params(weights: list) -> int:
    """How many numbers ``weights`` (a model's trainable weights) hold."""
    return int(sum(np.prod(w.shape) for w in weights))
