"""Beyond the frozen base: fine-tune Xception's top blocks after the head has converged.

A forward and backward pass through the whole network at 299 px is far too slow on a
CPU, but only the top blocks learn: everything below them is frozen, so its output for
an image never changes. As on the fast path, that output (the activations entering
``block13``, 19x19x728 at 299 px) is computed once and cached (float16), and only the
top blocks and the head run each epoch, at a low learning rate, with BatchNorm kept in
inference mode (frozen statistics: the keras-io fine-tuning recipe).

The fine-tuned layers are the base's own layers, so the saved ``.h5`` is the same
architecture as any other checkpoint, and it must predict what fine-tuning measured.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from training import features, pipeline, runs
from training.config import RunConfig
from training.model import compile_model, make_base, make_network
from training.runs import RunResult
from training.workspace import Workspace

ENTRY = {  # the layer each fine-tunable block starts at (its input is the cut)
    "block13": "block13_sepconv1_act",
    "block14": "block14_sepconv1",
}


def split_base(base: keras.Model, block: str) -> tuple[keras.Model, keras.Model]:
    """(stem, blocks): frozen layers up to ``block``, and ``block`` to the base's output.

    Both share the base's layers, so training ``blocks`` trains the base itself.
    """
    if block not in ENTRY:
        raise ValueError(f"Expected a block among {', '.join(ENTRY)}. Received: {block!r}")
    cut = base.get_layer(ENTRY[block]).input
    return keras.Model(base.input, cut, name="stem"), keras.Model(cut, base.output, name=block)


def unfreeze(base: keras.Model, blocks: keras.Model) -> None:
    """Make ``blocks``' layers trainable, except BatchNorm (its statistics stay frozen)."""
    base.trainable = True
    tuned = {id(layer) for layer in blocks.layers}
    for layer in base.layers:
        is_bn = isinstance(layer, layers.BatchNormalization)
        layer.trainable = id(layer) in tuned and not is_bn


def fine_tune_run(ws: Workspace, cfg: RunConfig, head: RunResult) -> RunResult:
    """Fine-tune ``cfg.fine_tune_from`` and up, starting from ``head``'s trained top."""
    if head.top is None:
        raise ValueError("Expected a fast-path head run to fine-tune from (no augmentation).")
    run_dir = runs.fresh_dir(ws.output_dir, cfg)
    size, n_classes = cfg.image_size, len(ws.labels)
    with ws.strategy.scope():
        base = make_base(size, ws.weights)  # fresh: the workspace's shared base stays frozen
        network = make_network(
            size, cfg.size_inner, cfg.droprate, n_classes=n_classes, l2=cfg.l2, base=base
        )
        network.top.set_weights(head.top.get_weights())
        stem, blocks = split_base(base, cfg.fine_tune_from)
    x_train = activations(ws, stem, cfg, "train")
    y_train = ws.targets("train")
    if cfg.fine_tune_flip:  # a cached augmentation: the mirror image of every train photo
        x_train = np.concatenate([x_train, activations(ws, stem, cfg, "train", flip=True)])
        y_train = np.concatenate([y_train, y_train])
    x_val = activations(ws, stem, cfg, "validation")
    with ws.strategy.scope():
        unfreeze(base, blocks)
        tuner = _tuning_model(blocks, network.top)
        compile_model(tuner, cfg.fine_tune_learning_rate, label_smoothing=cfg.label_smoothing)
    keras.utils.set_random_seed(cfg.seed)
    fit = runs.fit_best(
        tuner,
        pipeline.array_batches(
            x_train, y_train, n_classes, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed
        ),
        validation_data=pipeline.array_batches(
            x_val, ws.targets("validation"), n_classes, batch_size=cfg.batch_size
        ),
        epochs=cfg.fine_tune_epochs,
        shuffle=False,  # array_batches shuffles (each epoch)
        verbose=ws.verbose,
    )
    trainable = runs.count_params(tuner.trainable_weights)
    base.trainable = False  # saved as a frozen base, like every other checkpoint
    runs.save_best(network.model, run_dir, fit)
    return runs.finish(
        cfg,
        run_dir,
        fit,
        trainable,
        fast_predict=lambda split: tuner.predict(
            pipeline.array_batches(activations(ws, stem, cfg, split), ws.targets(split), n_classes),
            verbose=0,
        ),
    )


def activations(
    ws: Workspace, stem: keras.Model, cfg: RunConfig, split: str, *, flip: bool = False
) -> np.ndarray:
    """The stem's output for a split (float16; of mirrored images if ``flip``), cached."""
    kind = cfg.fine_tune_from + ("flip" if flip else "")

    def pixels() -> np.ndarray:
        pixels = ws.pixels(split, cfg.image_size)
        return np.ascontiguousarray(pixels[:, :, ::-1]) if flip else pixels

    return ws.remember(
        ("activations", kind, split, cfg.image_size),
        lambda: features.cached_features(
            stem,
            pixels,
            len(ws.dataset[split]),
            ws.cache_path(split, cfg.image_size, kind=kind),
            desc=f"{kind} input {split}@{cfg.image_size}",
            dtype=np.float16,
        ),
    )


def _tuning_model(blocks: keras.Model, top: keras.Model) -> keras.Model:
    """Cached activations -> tuned blocks (BatchNorm in inference mode) -> pooling -> top."""
    inputs = keras.Input(blocks.input_shape[1:], name="activations")
    x = blocks(inputs, training=False)
    x = layers.GlobalAveragePooling2D(name="pooling")(x)
    return keras.Model(inputs, top(x), name="fine_tune")
