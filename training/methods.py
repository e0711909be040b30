"""The ways of training the head that cross-validation compares, and the head trainer.

A :class:`Method` is everything that decides the head's weights given cached features:
settings of the dense top, regularisation (dropout, L2, label smoothing, mixup on
features), which cached views of each photo it trains on, whether predictions average
the photo and its mirror image (test-time flip), and how the epoch count is chosen.
:func:`train_head` trains one on given rows and returns the held-out logits after every
epoch, so the epoch count is chosen by cross-validation, not by a single split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.folds import stratified_folds

STEPS_PER_EXECUTION = 32


@dataclass(frozen=True)
class Method:
    """One way of training the head on cached features (see the module docstring)."""

    name: str
    description: str
    learning_rate: float = 1e-3
    size_inner: int = 100
    droprate: float = 0.2
    l2: float = 0.0
    label_smoothing: float = 0.0
    mixup: float = 0.0  # alpha of Beta(alpha, alpha) for mixup on features; 0 = off
    train_views: tuple[str, ...] = ("orig",)
    tta_flip: bool = False  # predict the mean logits of the photo and its mirror image
    epochs: int = 20  # the most epochs tried; cross-validation picks how many to use
    batch_size: int = 32
    # > 0: today's recipe: hold out this share of the training rows and keep the epoch
    # with the best accuracy on it (as `train` does with the validation split).
    inner_holdout: float = 0.0
    # "block13"/"block14": after the head, fine-tune the base from that block up on cached
    # activations (`train --fine-tune`); the scored epochs are then the fine-tuning ones.
    fine_tune: str = ""
    fine_tune_epochs: int = 5
    fine_tune_learning_rate: float = 1e-4
    # > 0: predict with the mean of the weights after each fine-tuning epoch from this one
    # on (stochastic weight averaging, `training.weight_average`).
    fine_tune_average_from: int = 0

    @property
    def views(self) -> tuple[str, ...]:
        """Every cached view this method reads (a fine-tuning cut's activations included)."""
        predicted = ("orig", "flip") if self.tta_flip else ("orig",)
        cut = (self.activations_view,) if self.fine_tune else ()
        return tuple(dict.fromkeys((*self.train_views, *predicted, *cut)))

    @property
    def activations_view(self) -> str:
        """The key of the activations entering ``fine_tune`` among the cached views."""
        return f"{self.fine_tune}-input"

    @property
    def scored_epochs(self) -> int:
        """How many epochs have held-out logits (the fine-tuning ones, if it fine-tunes)."""
        return self.fine_tune_epochs if self.fine_tune else self.epochs

    def to_dict(self) -> dict:
        """The settings as JSON (a head-only method's without the fine-tuning ones)."""
        record = asdict(self)
        record["train_views"] = list(self.train_views)
        if not self.fine_tune:
            for key in ("fine_tune", "fine_tune_epochs", "fine_tune_learning_rate"):
                del record[key]
        if not self.fine_tune_average_from:  # absent when off: earlier digests still hold
            del record["fine_tune_average_from"]
        return record


TODAY = Method(
    "today",
    "today's `make run` recipe: lr 1e-3, Dense(100)+Dropout(0.2), 20 epochs, best epoch by "
    "accuracy on a held-out 10% (the validation split's share)",
    inner_holdout=0.1,
)

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        TODAY,
        Method("all-rows", "today's settings on all training rows, epochs chosen by CV"),
        Method(
            "flip",
            "+ a mirrored copy of every training photo (cached view)",
            train_views=("orig", "flip"),
        ),
        Method(
            "flip-tta",
            "flip, and predictions average the photo and its mirror image",
            train_views=("orig", "flip"),
            tta_flip=True,
        ),
        Method("ls0.1", "label smoothing 0.1", label_smoothing=0.1),
        Method("drop0.5", "dropout 0.5", droprate=0.5),
        Method("l2-1e-3", "L2 1e-3 on the dense kernels", l2=1e-3),
        Method("inner300-drop0.5", "Dense(300)+Dropout(0.5)", size_inner=300, droprate=0.5),
        Method("linear", "no inner layer (softmax regression on the features)", size_inner=0),
        Method("mixup0.2", "mixup on features, alpha 0.2", mixup=0.2, epochs=30),
        Method("lr3e-4", "lr 3e-4, up to 40 epochs", learning_rate=3e-4, epochs=40),
        Method(
            "flip-drop0.5-ls0.1",
            "flip + dropout 0.5 + label smoothing 0.1",
            train_views=("orig", "flip"),
            droprate=0.5,
            label_smoothing=0.1,
        ),
        Method(
            "zoom",
            "+ a closer shot of every training photo (central 80%, scaled back; cached view)",
            train_views=("orig", "zoom"),
        ),
        Method(
            "flip-zoom",
            "+ the mirror image and the closer shot of every training photo (cached views)",
            train_views=("orig", "flip", "zoom"),
        ),
        Method(
            "flip-mixup0.2",
            "flip + mixup on features, alpha 0.2",
            train_views=("orig", "flip"),
            mixup=0.2,
            epochs=30,
        ),
        Method(
            "ft-block13",
            "today's head, then the exit flow (block13 and up) fine-tuned: 5 epochs at lr "
            "1e-4, BatchNorm frozen, best epoch on the held-out 10% (`train --fine-tune block13`)",
            inner_holdout=0.1,
            fine_tune="block13",
        ),
        Method(
            "ft-block13-swa",
            "ft-block13 predicting with the mean of its weights after each fine-tuning epoch "
            "from the 2nd on (stochastic weight averaging)",
            inner_holdout=0.1,
            fine_tune="block13",
            fine_tune_average_from=2,
        ),
        Method(
            "ft-block14",
            "ft-block13 with only the last block (block14) fine-tuned",
            inner_holdout=0.1,
            fine_tune="block14",
        ),
    )
}
# Fine-tuning runs the top blocks forward and backward for every photo, every epoch
# (~12 min per fold on 2 CPU cores): it runs only when named.
HEAD_ONLY = tuple(name for name, method in METHODS.items() if not method.fine_tune)


@dataclass(frozen=True)
class HeadRun:
    """What training one head leaves: per-epoch logits on the rows it was asked about."""

    logits: np.ndarray  # (epochs, rows, classes) on the held-out rows
    inner_accuracy: np.ndarray | None  # (epochs,) on the inner holdout, if the method has one
    top: Any  # the trained keras head (last epoch)
    inner_rows: np.ndarray | None = None  # the inner holdout, if the method has one
    best_weights: list | None = None  # the head's weights at its first best inner epoch
    network: Any = None  # the whole network (base + head), when its base was fine-tuned


def train_head(
    method: Method,
    views: Mapping[str, np.ndarray],
    targets: np.ndarray,
    train_rows: np.ndarray,
    held_out_rows: np.ndarray,
    n_classes: int,
    seed: int,
) -> HeadRun:
    """Train ``method`` on ``train_rows``; logits of ``held_out_rows`` after each epoch."""
    import keras

    from training.model import make_top

    rows, inner = train_rows, None
    if method.inner_holdout > 0:
        rows, inner = _inner_split(train_rows, targets, method.inner_holdout, seed)
    x = np.concatenate([views[v][rows] for v in method.train_views])
    y = np.tile(targets[rows], len(method.train_views))
    keras.utils.set_random_seed(seed)
    top = make_top(method.size_inner, method.droprate, n_classes, l2=method.l2)
    top.compile(
        optimizer=keras.optimizers.Adam(learning_rate=method.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=method.label_smoothing
        ),
        # The same optimiser and loss as `training.model.compile_model`, several steps per
        # call: a tiny head otherwise spends a third of its time in per-step overhead.
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    rng = np.random.default_rng(seed)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    logits, inner_accuracy, best_weights = [], [], None
    for _ in range(method.epochs):
        xe, ye = (x, onehot) if not method.mixup else _mixup(x, onehot, method.mixup, rng)
        top.fit(xe, ye, batch_size=method.batch_size, epochs=1, shuffle=True, verbose=0)
        logits.append(predict(top, views, held_out_rows, method.tta_flip))
        if inner is not None:
            guess = predict(top, views, inner, method.tta_flip).argmax(axis=1)
            inner_accuracy.append(float(np.mean(guess == targets[inner])))
            if inner_accuracy[-1] > max(inner_accuracy[:-1], default=-1.0):
                best_weights = top.get_weights()
    return HeadRun(
        np.stack(logits),
        np.array(inner_accuracy) if inner is not None else None,
        top,
        inner,
        best_weights,
    )


def predict(top, views: Mapping[str, np.ndarray], rows: np.ndarray, tta_flip: bool) -> np.ndarray:
    """The head's logits for ``rows``; with ``tta_flip`` the mean over the photo and its mirror."""
    logits = np.asarray(top(views["orig"][rows], training=False), dtype=np.float64)
    if tta_flip:
        flipped = np.asarray(top(views["flip"][rows], training=False), dtype=np.float64)
        logits = (logits + flipped) / 2
    return logits


def _inner_split(
    rows: np.ndarray, targets: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, inner holdout rows): a stratified ``share`` of ``rows`` held out."""
    smallest = int(np.bincount(targets[rows])[np.unique(targets[rows])].min())
    k = max(2, min(round(1 / share), smallest))
    fold = stratified_folds(targets[rows], k, seed + 7919)
    return rows[fold != 0], rows[fold == 0]


def _mixup(
    x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of mixup: each row mixed with a random partner, weight ~ Beta(alpha, alpha)."""
    lam = rng.beta(alpha, alpha, size=(len(x), 1)).astype(np.float32)
    partner = rng.permutation(len(x))
    return lam * x + (1 - lam) * x[partner], lam * y + (1 - lam) * y[partner]
