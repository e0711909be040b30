"""Beyond the frozen base: fine-tune Xception's top blocks after the head has converged.

A forward and backward pass through the whole network at 299 px is far too slow on a
CPU, but only the top blocks learn: everything below them is frozen, so its output for
an image never changes. Like the pooled features, that output (the activations entering
``block13``, 19x19x728 at 299 px) is computed once and cached (float16), and only the
top blocks and the head run each epoch, at a low learning rate, with BatchNorm kept in
inference mode (frozen statistics: the keras-io fine-tuning recipe).

The fine-tuned layers are the base's own layers, so the saved ``.h5`` is the same
architecture as any other checkpoint, and it must predict what fine-tuning measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training import features, pipeline
from training.data import Dataset
from training.methods import HeadRun, Method, train_head
from training.model import Network, compile_model, make_base, make_network
from training.weight_average import WeightAverage

ENTRY = {"block13": "block13_sepconv1_act"}  # the layer a fine-tunable block starts at


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


def tuning(
    base: keras.Model, block: str, top_weights: list, head: Method, n_classes: int
) -> tuple[Network, keras.Model, keras.Model]:
    """(network, stem, tuner): ``head``'s top on ``base``, ``block`` and up unfrozen.

    The tuner trains the unfrozen blocks and the top together on the stem's cached output,
    compiled with ``head``'s fine-tuning learning rate and label smoothing.
    """
    network = make_network(
        base.input_shape[1],
        head.size_inner,
        head.droprate,
        n_classes=n_classes,
        l2=head.l2,
        base=base,
    )
    network.top.set_weights(top_weights)
    stem, blocks = split_base(base, block)
    unfreeze(base, blocks)
    tuner = _tuning_model(blocks, network.top)
    compile_model(tuner, head.fine_tune_learning_rate, label_smoothing=head.label_smoothing)
    return network, stem, tuner


def _tuning_model(blocks: keras.Model, top: keras.Model) -> keras.Model:
    """Cached activations -> tuned blocks and pooling (BatchNorm in inference mode) -> top."""
    inputs = keras.Input(blocks.input_shape[1:], name="activations")
    return keras.Model(inputs, top(blocks(inputs, training=False)), name="fine_tune")


def labelled_activations(
    dataset: Dataset,
    block: str,
    image_size: int,
    weights: str | Path | None,
    cache_dir: Path | None,
) -> np.ndarray:
    """The activations entering ``block`` for every labelled photo (all splits, float16).

    The stem is built only if some split is not cached yet.
    """
    return features.labelled(
        dataset,
        block,
        image_size,
        weights,
        cache_dir,
        lambda: split_base(make_base(image_size, weights), block)[0],
        dtype=np.float16,
    )


def fine_tune_fold(
    method: Method,
    inputs: Mapping[str, np.ndarray],
    targets: np.ndarray,
    train_rows: np.ndarray,
    held_out_rows: np.ndarray,
    n_classes: int,
    seed: int,
    base: Callable[[], keras.Model],
    inner_rows: np.ndarray | None = None,
    *,
    keep_best: bool = False,
) -> HeadRun:
    """The head, then its cut fine-tuned, on some rows; held-out logits after each epoch.

    The head is trained as ``method`` says (its best inner-holdout epoch kept); then
    ``method.fine_tune`` and up are trained on the same rows from their cached input
    activations, with the inner holdout scored after every fine-tuning epoch (with
    ``method.fine_tune_average_from``, the weights' running mean is scored, and kept).
    The network ends with the last epoch's weights, or with ``keep_best`` the first best
    on the inner holdout. ``base`` builds a fresh frozen base (it is modified).
    """
    head = train_head(
        method, inputs, targets, train_rows, held_out_rows[:0], n_classes, seed, inner_rows
    )
    inner = head.inner_rows
    rows = train_rows if inner is None else np.setdiff1d(train_rows, inner)
    acts = inputs[method.activations_view]
    keras.utils.set_random_seed(seed)
    frozen = base()
    top_weights = head.best_weights or head.top.get_weights()
    network, _, tuner = tuning(frozen, method.fine_tune, top_weights, method, n_classes)
    batches = pipeline.array_batches(
        acts, targets, n_classes, batch_size=method.batch_size, shuffle=True, seed=seed, rows=rows
    )
    logits, inner_accuracy, best = [], [], None
    average = WeightAverage(tuner.trainable_weights)
    for epoch in range(1, method.fine_tune_epochs + 1):
        tuner.fit(batches, epochs=1, shuffle=False, verbose=0)  # batches shuffle
        if method.fine_tune_average_from and epoch >= method.fine_tune_average_from:
            average.add()
        with average.applied():  # scored (and chosen) as the model that would ship
            logits.append(_predict(tuner, acts, held_out_rows))
            if inner is not None:
                guess = _predict(tuner, acts, inner).argmax(axis=1)
                inner_accuracy.append(float(np.mean(guess == targets[inner])))
                if keep_best and inner_accuracy[-1] > max(inner_accuracy[:-1], default=-1.0):
                    best = [v.numpy() for v in tuner.trainable_weights]
    average.assign()
    for variable, value in zip(tuner.trainable_weights, best or [], strict=False):
        variable.assign(value)
    frozen.trainable = False  # saved as a frozen base, like every other checkpoint
    return HeadRun(
        np.stack(logits),
        np.array(inner_accuracy) if inner is not None else None,
        network.top,
        inner,
        network=network.model,
    )


def _predict(tuner: keras.Model, acts: np.ndarray, rows: np.ndarray, batch: int = 64) -> np.ndarray:
    """The tuned network's logits for ``rows`` of the cached activations (float64)."""
    out = [
        np.asarray(tuner.predict_on_batch(acts[rows[i : i + batch]].astype(np.float32)))
        for i in range(0, len(rows), batch)
    ]
    return np.concatenate(out).astype(np.float64) if out else np.empty((0, tuner.output_shape[1]))
