"""One training run: fit the top, keep the best epoch by validation accuracy as ``.h5``.

Two paths give the same kind of result (a complete base + top Keras model):

* **fast** (no augmentation): the top trains on cached pooled features; the best
  epoch's top weights are put into the full model, which is saved as the checkpoint.
* **full** (augmentation on): images flow through the frozen base every epoch and
  Keras' ``ModelCheckpoint`` saves each new best epoch.

Either way the in-memory model after ``fit()`` is the *last* epoch; what is handed
over is the best file (see :mod:`training.runs`).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from training import pipeline, runs
from training.augment import make_augmenter
from training.config import RunConfig
from training.model import Network, compile_model, make_network
from training.runs import RunResult
from training.workspace import Workspace


def train_run(ws: Workspace, cfg: RunConfig) -> RunResult:
    """Train one configuration; its checkpoints go to ``output_dir/runs/<name>/``."""
    run_dir = runs.fresh_dir(ws.output_dir, cfg)
    if cfg.fast:  # features first, so that extraction time is not counted as training
        ws.features("train", cfg.image_size)
        ws.features("validation", cfg.image_size)
    keras.utils.set_random_seed(cfg.seed)
    with ws.strategy.scope():
        network = make_network(
            cfg.image_size,
            cfg.size_inner,
            cfg.droprate,
            n_classes=len(ws.labels),
            l2=cfg.l2,
            base=ws.base(cfg.image_size),
        )
        trained = network.top if cfg.fast else network.model
        compile_model(trained, cfg.learning_rate, label_smoothing=cfg.label_smoothing)
    trainable = runs.count_params(network.top.trainable_weights)
    if not cfg.fast:
        fit = _fit_full(ws, cfg, network.model, run_dir)
        return runs.finish(cfg, run_dir, fit, trainable)
    fit = _fit_fast(ws, cfg, network)
    runs.save_best(network.model, run_dir, fit)
    return runs.finish(
        cfg,
        run_dir,
        fit,
        trainable,
        top=network.top,
        fast_predict=lambda split: network.top.predict(
            ws.features(split, cfg.image_size), verbose=0
        ),
    )


def _fit_fast(ws: Workspace, cfg: RunConfig, network: Network) -> runs.Fit:
    n_classes = len(ws.labels)
    y_train = keras.utils.to_categorical(ws.targets("train"), n_classes)
    y_val = keras.utils.to_categorical(ws.targets("validation"), n_classes)
    return runs.fit_best(
        network.top,
        ws.features("train", cfg.image_size),
        y_train,
        validation_data=(ws.features("validation", cfg.image_size), y_val),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        shuffle=True,
        verbose=ws.verbose,
    )


def _fit_full(ws: Workspace, cfg: RunConfig, model: keras.Model, run_dir: Path) -> runs.Fit:
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
        str(run_dir / runs.CHECKPOINT), monitor="val_accuracy", mode="max", save_best_only=True
    )
    history, seconds = runs.timed_fit(
        model,
        train,
        validation_data=val,
        epochs=cfg.epochs,
        callbacks=[checkpoint],
        shuffle=False,  # the tf.data pipeline shuffles (each epoch)
        verbose=ws.verbose,
    )
    return runs.Fit(history, int(np.argmax(history["val_accuracy"])) + 1, seconds)
