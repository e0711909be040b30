"""Beyond the frozen base: fine-tune Xception's top blocks after the head has converged.

A forward and backward pass through the whole network at 299 px is far too slow on a
CPU, but only the top blocks learn: everything below them is frozen, so its output for
an image never changes. As on the fast path, that output (the activations entering
``block13``, 19x19x728 at 299 px) is computed once and cached (float16), and only the
top blocks and the head run each epoch, at a low learning rate, with BatchNorm kept in
inference mode (frozen statistics: the keras-io fine-tuning recipe).

The fine-tuned layers are the base's own layers, so the saved ``.h5`` is the same
architecture as any other checkpoint, and it must predict what fine-tuning measured.

Cross-validation runs the same recipe per fold (:func:`fine_tune_fold`) on the cached
activations of every labelled photo (:func:`labelled_activations`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training import data, features, pipeline, runs, views
from training.config import RunConfig
from training.data import Dataset
from training.methods import HeadRun, Method, train_head
from training.model import Network, compile_model, make_base, make_network
from training.runs import RunResult
from training.weight_average import WeightAverage
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
        network, stem, tuner = tuning(
            base, cfg.fine_tune_from, head.top.get_weights(), cfg, n_classes
        )
    x_train = activations(ws, stem, cfg, "train")
    y_train = ws.targets("train")
    if cfg.fine_tune_flip:  # a cached augmentation: the mirror image of every train photo
        x_train = np.concatenate([x_train, activations(ws, stem, cfg, "train", flip=True)])
        y_train = np.concatenate([y_train, y_train])
    x_val = activations(ws, stem, cfg, "validation")
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


def tuning(
    base: keras.Model, block: str, top_weights: list, head: RunConfig | Method, n_classes: int
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


def labelled_activations(
    dataset: Dataset,
    block: str,
    image_size: int,
    weights: str | Path | None,
    cache_dir: Path | None,
) -> np.ndarray:
    """The activations entering ``block`` for every labelled photo (all splits, float16).

    Cached per split in the same files as ``train --fine-tune``'s; the stem is built only
    if some split is not cached yet.
    """
    weights_fp = features.weights_fingerprint(weights)
    built: list[keras.Model] = []
    out: np.ndarray | None = None
    start = 0
    for split in dataset.splits:
        files = dataset[split].files
        path = features.cache_path(
            cache_dir, image_size, weights_fp, dataset.fingerprint, split, kind=block
        )
        part: np.ndarray | None = None
        if path is not None and path.is_file():
            part = np.load(path, mmap_mode="r")  # copied straight into ``out`` below
            part = part if len(part) == len(files) else None
        if part is None:
            if not built:
                built.append(split_base(make_base(image_size, weights), block)[0])
            desc = f"{block} input {split}@{image_size}"
            part = views.stream_features(built[0], files, image_size, desc=desc, dtype=np.float16)
            if path is not None:
                data.save_array(path, part)
        if out is None:  # one array for every photo: the splits are never held twice
            total = sum(len(dataset[s].files) for s in dataset.splits)
            out = np.empty((total, *part.shape[1:]), dtype=np.float16)
        out[start : start + len(part)] = part
        start += len(part)
    if out is None:
        raise ValueError("Expected at least one split of photos. Received none.")
    return out


def fine_tune_fold(
    method: Method,
    by_view: Mapping[str, np.ndarray],
    targets: np.ndarray,
    train_rows: np.ndarray,
    held_out_rows: np.ndarray,
    n_classes: int,
    seed: int,
    base: Callable[[], keras.Model],
) -> HeadRun:
    """``train --fine-tune`` on some rows: the head, then its cut; logits after each epoch.

    The head is trained as ``method`` says (its best inner-holdout epoch kept, as ``train``
    keeps the best validation epoch); then ``method.fine_tune`` and up are trained on the
    same rows from their cached input activations, with the inner holdout scored after
    every fine-tuning epoch (with ``method.fine_tune_average_from``, the weights' running
    mean is scored, and kept). ``base`` builds a fresh frozen base (it is modified).
    """
    head = train_head(method, by_view, targets, train_rows, held_out_rows[:0], n_classes, seed)
    inner = head.inner_rows
    rows = train_rows if inner is None else np.setdiff1d(train_rows, inner)
    acts = by_view[method.activations_view]
    keras.utils.set_random_seed(seed)
    frozen = base()
    top_weights = head.best_weights or head.top.get_weights()
    network, _, tuner = tuning(frozen, method.fine_tune, top_weights, method, n_classes)
    batches = pipeline.array_batches(
        acts, targets, n_classes, batch_size=method.batch_size, shuffle=True, seed=seed, rows=rows
    )
    logits, inner_accuracy = [], []
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
    average.assign()
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
