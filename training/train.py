"""One training run: fit the top, keep the best epoch by validation accuracy as ``.h5``.

Two paths give the same kind of result (a complete base + top Keras model):

* **fast** (no augmentation): the top trains on cached pooled features; the best
  epoch's top weights are put into the full model, which is saved as the checkpoint.
* **full** (augmentation on): images flow through the frozen base every epoch and
  Keras' ``ModelCheckpoint`` saves each new best epoch.

Either way the in-memory model after ``fit()`` is the *last* epoch; what is handed
over is the best file, reloaded from disk.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training import data, features, pipeline
from training.augment import make_augmenter
from training.config import RunConfig
from training.model import compile_model, make_base, make_feature_extractor, make_network

CHECKPOINT = "xception_v1_{epoch:02d}_{val_accuracy:.3f}.h5"


@dataclass
class Workspace:
    """What runs share: the dataset, the base per image size, pixels and features."""

    dataset: data.Dataset
    weights: str | Path | None
    output_dir: Path
    cache_dir: Path | None = None
    strategy: tf.distribute.Strategy = field(default_factory=tf.distribute.get_strategy)
    verbose: int = 2
    _bases: dict = field(default_factory=dict)
    _features: dict = field(default_factory=dict)
    _weights_fp: str | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.dataset.labels

    @property
    def weights_fingerprint(self) -> str:
        if self._weights_fp is None:
            self._weights_fp = features.weights_fingerprint(self.weights)
        return self._weights_fp

    def fingerprint(self) -> dict[str, str]:
        return {"data": self.dataset.fingerprint, "weights": self.weights_fingerprint}

    def base(self, image_size: int) -> keras.Model:
        """The frozen base at ``image_size``, built once (features and models share it)."""
        if image_size not in self._bases:
            with self.strategy.scope():
                self._bases[image_size] = make_base(image_size, self.weights)
        return self._bases[image_size]

    def pixels(self, split: str, image_size: int) -> np.ndarray:
        return data.load_pixels(self.dataset, split, image_size, self.cache_dir)

    def targets(self, split: str) -> np.ndarray:
        return self.dataset[split].targets

    def features(self, split: str, image_size: int) -> np.ndarray:
        """Pooled base features of a split (memory, then disk cache, else computed)."""
        key = (split, image_size)
        if key not in self._features:
            self._features[key] = features.cached_features(
                make_feature_extractor(self.base(image_size)),
                lambda: self.pixels(split, image_size),
                len(self.dataset[split]),
                self.cache_path(split, image_size),
                desc=f"features {split}@{image_size}",
            )
        return self._features[key]

    def cache_path(self, split: str, image_size: int) -> Path | None:
        """Where a split's features are cached (``None``: random weights, or no cache)."""
        return features.cache_path(
            self.cache_dir, image_size, self.weights_fingerprint, self.dataset.fingerprint, split
        )


@dataclass
class RunResult:
    """What a run leaves behind (one entry of the manifest's ``runs``)."""

    config: RunConfig
    checkpoint: Path
    best_epoch: int  # 1-based, as in the file name
    best_val_accuracy: float
    history: dict[str, list[float]]
    seconds: float
    trainable_params: int
    top: keras.Model | None = None  # fast path: the trained top (features -> logits)
    fast_predict: Callable[[str], np.ndarray] | None = None  # cached-input logits of a split

    @property
    def name(self) -> str:
        return self.config.run_name


def train_run(ws: Workspace, cfg: RunConfig) -> RunResult:
    """Train one configuration; its checkpoints go to ``output_dir/runs/<name>/``."""
    run_dir = ws.output_dir / "runs" / cfg.run_name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    n_classes = len(ws.labels)
    if cfg.fast:  # features first, so that extraction time is not counted as training
        ws.features("train", cfg.image_size)
        ws.features("validation", cfg.image_size)
    keras.utils.set_random_seed(cfg.seed)
    with ws.strategy.scope():
        network = make_network(
            cfg.image_size,
            cfg.size_inner,
            cfg.droprate,
            n_classes=n_classes,
            l2=cfg.l2,
            base=ws.base(cfg.image_size),
        )
        trained = network.top if cfg.fast else network.model
        compile_model(trained, cfg.learning_rate, label_smoothing=cfg.label_smoothing)
    start = time.perf_counter()
    if cfg.fast:
        history, best_epoch = _fit_fast(ws, cfg, network, run_dir)
    else:
        history, best_epoch = _fit_full(ws, cfg, network.model, run_dir)
    seconds = time.perf_counter() - start
    checkpoint = _checkpoint_of(run_dir, best_epoch)
    result = RunResult(
        config=cfg,
        checkpoint=checkpoint,
        best_epoch=best_epoch,
        best_val_accuracy=history["val_accuracy"][best_epoch - 1],
        history=history,
        seconds=seconds,
        trainable_params=_count(network.top.trainable_weights),
        top=network.top if cfg.fast else None,
        fast_predict=(
            (lambda split: network.top.predict(ws.features(split, cfg.image_size), verbose=0))
            if cfg.fast
            else None
        ),
    )
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    return result


class BestTop(keras.callbacks.Callback):
    """``ModelCheckpoint(save_best_only, monitor=val_accuracy, mode=max)`` for the fast path.

    Keeps the best epoch's top weights in memory (strictly better only, as Keras does:
    a tie keeps the earlier epoch); the full model is saved once, after ``fit()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.best = -np.inf
        self.best_epoch = 0
        self.best_weights = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get("val_accuracy")
        if value is not None and value > self.best:
            self.best, self.best_epoch = value, epoch + 1
            self.best_weights = self.model.get_weights()


def _fit_fast(ws: Workspace, cfg: RunConfig, network, run_dir: Path):
    n_classes = len(ws.labels)
    x_train = ws.features("train", cfg.image_size)
    x_val = ws.features("validation", cfg.image_size)
    y_train = keras.utils.to_categorical(ws.targets("train"), n_classes)
    y_val = keras.utils.to_categorical(ws.targets("validation"), n_classes)
    keeper = BestTop()
    fit = network.top.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        shuffle=True,
        callbacks=[keeper],
        verbose=ws.verbose,
    )
    network.top.set_weights(keeper.best_weights)
    val_accuracy = fit.history["val_accuracy"][keeper.best_epoch - 1]
    name = CHECKPOINT.format(epoch=keeper.best_epoch, val_accuracy=val_accuracy)
    network.model.save(run_dir / name)
    return _plain(fit.history), keeper.best_epoch


def _fit_full(ws: Workspace, cfg: RunConfig, model: keras.Model, run_dir: Path):
    n_classes = len(ws.labels)
    train = pipeline.make_dataset(
        ws.pixels("train", cfg.image_size),
        ws.targets("train"),
        n_classes,
        batch_size=cfg.batch_size,
        shuffle=True,
        augmenter=make_augmenter(cfg.augmentation, seed=cfg.seed),
        seed=cfg.seed,
    )
    val = pipeline.make_dataset(
        ws.pixels("validation", cfg.image_size),
        ws.targets("validation"),
        n_classes,
        batch_size=cfg.batch_size,
    )
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(run_dir / CHECKPOINT), monitor="val_accuracy", mode="max", save_best_only=True
    )
    fit = model.fit(
        train,
        validation_data=val,
        epochs=cfg.epochs,
        callbacks=[checkpoint],
        shuffle=False,  # the tf.data pipeline shuffles (each epoch)
        verbose=ws.verbose,
    )
    history = _plain(fit.history)
    return history, int(np.argmax(history["val_accuracy"])) + 1


def _checkpoint_of(run_dir: Path, epoch: int) -> Path:
    matches = sorted(run_dir.glob(f"xception_v1_{epoch:02d}_*.h5"))
    if len(matches) != 1:
        raise RuntimeError(
            f"Expected one checkpoint for the best epoch {epoch} in {run_dir}. "
            f"Found: {[p.name for p in matches]}"
        )
    return matches[0]


def load_checkpoint(path: str | Path) -> keras.Model:
    """Reload a saved ``.h5`` full model (uncompiled: for prediction and hand-over)."""
    return keras.models.load_model(path, compile=False)


def _plain(history: dict) -> dict[str, list[float]]:
    return {key: [float(v) for v in values] for key, values in history.items()}


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))
